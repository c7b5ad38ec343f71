//! Rules that check themselves (issue 18): reads src/**/*.rs as text and fails
//! on what a review would otherwise have to catch by eye.
//!
//! - **Layers.** core < io < shard < net < cmd (see [`LAYERS`]); a file may
//!   name its own layer and lower ones, never a higher one.
//! - **No circles among files.** The module graph (the same imports, resolved
//!   to files, re-exports followed) must have no cycle beyond
//!   [`KNOWN_CIRCLES`], which may only shrink. `#[cfg(test)]` code counts for
//!   the layer rule but not here: a writer's tests may read back through the
//!   reader without coupling the two in the build that ships.
//! - **Disk access through the Disk seam.** No `std::fs`, `File::open`,
//!   `File::create` or `OpenOptions` in shard/ or net/ beyond [`FS_ALLOWED`].
//! - **Length ratchets.** No function longer than [`FN_LINES_MAX`] lines, no
//!   file longer than [`FILE_LINES_MAX`]; both may only go down.
//! - **Module docs.** Every file starts with a `//!` comment saying what the
//!   module owns and what it must never do.
//!
//! The rules are written against paths and layers, not today's file names, so
//! they keep working when files move; only the allowlists name files. The
//! scan is textual (comments, strings and char literals blanked first) and
//! runs in well under a second. Each rule has a unit test below that feeds it
//! a small bad tree and asserts that it is caught.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Import circles that exist today: being removed by the redesign (issue 18);
/// this list may only shrink (it is empty since the one-way shard landed).
/// Each entry is the exact set of files of one strongly connected component of
/// the file graph (paths relative to src/, sorted). The test fails if a circle
/// appears that is not listed, and also if a listed circle no longer exists
/// exactly as listed (replace a shrunken entry by what the test prints, delete
/// a vanished one).
const KNOWN_CIRCLES: &[&[&str]] = &[
    // Emptied when the one-way shard landed (main 88d1aae, 4aeb73a): the
    // shard backup/context/router/state/txn_participant circle and cmd
    // backup <-> verify are gone. Keep it empty.
];

/// Uses of the real filesystem in shard/ or net/ that are legitimate: (file
/// relative to src/, text on the offending line, why). Shrink-only: an entry
/// whose line is gone fails the test until it is removed.
const FS_ALLOWED: &[(&str, &str, &str)] = &[(
    "net/admin.rs",
    "std::fs::read_to_string(\"/proc/self/status\")",
    "procfs is a kernel interface, not storage: the resident-set gauge of \
     /metrics reads it. The Disk seam is for data-directory bytes (O_DIRECT, \
     simulated power loss), and SimDisk has no /proc to offer.",
)];

/// The longest function allowed, in lines from its `fn` line to its closing
/// brace. Today's maximum; lower it whenever the longest function is cut,
/// never raise it.
const FN_LINES_MAX: usize = 319;

/// The longest file allowed, in lines. Today's maximum; only lower it.
const FILE_LINES_MAX: usize = 990;

/// Layer of each top-level module under src/ (the first path component, or
/// the file name without `.rs`), with the reason. Lower rank = lower layer.
const LAYERS: &[(&str, u8, &str)] = &[
    (
        "core",
        0,
        "pure formats, types, limits and statuses: no I/O, no engine",
    ),
    (
        "check",
        0,
        "the history checker is pure: it takes a history as plain data and \
         returns a verdict, so it must never depend on the engine, the network \
         or the disk (its module doc says so)",
    ),
    (
        "failpoint",
        0,
        "a crash point that reads one environment variable and aborts; it \
         depends on nothing and is called from the shard (and may be called \
         from io), so it must sit below both",
    ),
    (
        "io",
        1,
        "every disk byte behind the Disk trait (O_DIRECT, std, simulated)",
    ),
    (
        "shard",
        2,
        "one core's state machine: LSM, WAL group commit, transactions, backup, runtime",
    ),
    (
        "sim",
        2,
        "the deterministic scheduler of the shard simulations: it drives \
         shard tasks with the shard's SimClock, so it sits at the shard's \
         level; it must not know about the network or the commands",
    ),
    (
        "net",
        3,
        "codec, server, connections, client and admin HTTP",
    ),
    (
        "bench",
        4,
        "the load generator behind `corekv bench`: a TCP client of a server \
         (it uses net's codec and client) driven by a subcommand; nothing in \
         the engine may depend on it",
    ),
    (
        "fuzzing",
        4,
        "entry points of the fuzz targets over decoders of every layer (core, \
         io, net); a leaf like a subcommand: nothing in the engine may call it",
    ),
    (
        "cmd",
        4,
        "the subcommands of the binary: serve, cli, bench, verify, backup, ...",
    ),
    ("main", 4, "the binary's entry point; declares mod cmd"),
];

/// Crate roots. Nothing resolves to them (`crate::x` names the file of x); the
/// library's root only declares modules, so its own lines are not read.
/// main.rs's are: it is the binary's root and sits at cmd's layer.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];
const UNREAD: &[&str] = &["lib.rs"];

// ---------------------------------------------------------------------------
// The source tree as text.

/// Every `.rs` file under a root, keyed by its path relative to that root
/// with `/` separators (e.g. `shard/state.rs`).
type Tree = BTreeMap<String, String>;

fn load(dir: &Path, prefix: &str, out: &mut Tree) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            load(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.insert(format!("{prefix}{name}"), text);
        }
    }
}

fn src_tree() -> Tree {
    let mut tree = Tree::new();
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut tree,
    );
    tree
}

/// Whether a file says it is generated (then it needs no hand-written doc).
fn generated(text: &str) -> bool {
    text.lines().take(5).any(|l| l.contains("@generated"))
}

/// The text with comments, string literals and char literals replaced by
/// spaces (newlines kept), so that byte offsets and line numbers still match
/// the original and no brace, `fn` or path inside them is seen.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = c.clone();
    let n = c.len();
    let mut i = 0;
    let wipe = |out: &mut Vec<char>, from: usize, to: usize| {
        for x in out.iter_mut().take(to.min(n)).skip(from) {
            if *x != '\n' {
                *x = ' ';
            }
        }
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < n {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            let mut j = i;
            while j < n && c[j] != '\n' {
                j += 1;
            }
            wipe(&mut out, i, j);
            i = j;
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let (mut j, mut depth) = (i + 2, 1);
            while j < n && depth > 0 {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            wipe(&mut out, i, j);
            i = j;
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            // A raw string: r"..", r#".."#, br"..".
            let s = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut k = s;
            while k < n && c[k] == '#' {
                k += 1;
            }
            k < n && c[k] == '"'
        } {
            let s = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut k = s;
            while c[k] == '#' {
                k += 1;
            }
            let hashes = k - s;
            let mut j = k + 1;
            'scan: while j < n {
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'scan;
                }
                j += 1;
            }
            wipe(&mut out, k + 1, j.saturating_sub(1 + hashes));
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < n && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            wipe(&mut out, i + 1, j);
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('a', '\n', '\'', '\u{..}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                j += 1; // the escaped char, possibly a quote
                while j < n && c[j] != '\'' {
                    j += 1;
                }
                wipe(&mut out, i + 1, j);
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                wipe(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // ::
    Punct(char),
}

/// Tokens of blanked text with their 1-based line numbers. `$crate` is one
/// identifier; numbers and the rest of the punctuation are kept only as far
/// as the scans below need them.
fn tokens(blanked: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = blanked.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' || (ch == '$' && c.get(i + 1) == Some(&'c')) {
            let s = i;
            i += 1;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[s..i].iter().collect();
            // r#ident raw identifiers
            out.push((Tok::Ident(word), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

// ---------------------------------------------------------------------------
// Modules, references and the file graph.

/// The module path of a file: `shard/state.rs` -> [shard, state],
/// `shard/mod.rs` -> [shard], `lib.rs` -> [].
fn module_of(file: &str) -> Vec<String> {
    if ROOTS.contains(&file) {
        return Vec::new();
    }
    let mut segs: Vec<String> = file.split('/').map(str::to_string).collect();
    let last = segs.pop().unwrap();
    if last != "mod.rs" {
        segs.push(last.trim_end_matches(".rs").to_string());
    }
    segs
}

/// The file that defines a module path, if any.
fn file_of(tree: &Tree, module: &[String]) -> Option<String> {
    if module.is_empty() {
        return None;
    }
    let base = module.join("/");
    [format!("{base}.rs"), format!("{base}/mod.rs")]
        .into_iter()
        .find(|f| tree.contains_key(f))
}

/// One path naming something in this crate (or in corekv from the binary).
#[derive(Debug, Clone)]
struct Ref {
    line: usize,
    /// As written, e.g. `super::state::ShardState`.
    text: String,
    /// Absolute module path of what it names, e.g. [shard, state, ShardState].
    abs: Vec<String>,
    /// Inside a `#[cfg(test)]` item: part of the test build only.
    test: bool,
}

/// A `use` tree flattened into paths (`a::{b, c::d}` -> a::b, a::c::d;
/// `a::{self}` -> a; `a::*` -> a).
fn use_paths(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut path = prefix.to_vec();
    let mut line = toks.get(i).map_or(0, |t| t.1);
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Ident(w) if w == "as" => {
                i += 2; // `as name`
                continue;
            }
            Tok::Ident(w) if w == "self" && !path.is_empty() => {
                // `a::{self}` names `a` itself.
            }
            Tok::Ident(w) => {
                if path.len() == prefix.len() {
                    line = toks[i].1;
                }
                path.push(w.clone());
            }
            Tok::Path => {}
            Tok::Punct('*') => path.push("*".to_string()),
            Tok::Punct('{') => {
                i += 1;
                loop {
                    i = use_paths(toks, i, &path, out);
                    match toks.get(i).map(|t| &t.0) {
                        Some(Tok::Punct(',')) => i += 1,
                        _ => break,
                    }
                    if matches!(toks.get(i).map(|t| &t.0), Some(Tok::Punct('}'))) {
                        break;
                    }
                }
                i += 1; // the closing brace
                return i;
            }
            Tok::Punct(',') | Tok::Punct('}') | Tok::Punct(';') => break,
            Tok::Punct(_) => {}
        }
        i += 1;
    }
    if !path.is_empty() {
        out.push((path, line));
    }
    i
}

/// What a path's first segments mean from inside `module` of `file`: the
/// absolute path it names in this source tree, or None for std and other
/// crates.
fn absolute(tree: &Tree, module: &[String], segs: &[String]) -> Option<Vec<String>> {
    let first = segs.first()?.as_str();
    match first {
        "crate" | "$crate" | "corekv" => Some(segs[1..].to_vec()),
        "super" | "self" => {
            let mut base = module.to_vec();
            let mut k = 0;
            while segs.get(k).map(String::as_str) == Some("super") {
                base.pop()?;
                k += 1;
            }
            if k == 0 {
                k = 1; // self
            }
            base.extend(segs[k..].iter().cloned());
            Some(base)
        }
        child => {
            // 2018 paths: a child module of the current module.
            let mut m = module.to_vec();
            m.push(child.to_string());
            file_of(tree, &m)?;
            let mut abs = module.to_vec();
            abs.extend(segs.iter().cloned());
            Some(abs)
        }
    }
}

/// Every reference to this source tree that a file makes: `use` trees and
/// paths in code (`crate::x::y`, `super::x`, `self::x`, `corekv::x`, or a
/// child module's name followed by `::`). Inline `mod name { .. }` blocks are
/// tracked so that `super::` inside `mod tests` means the file's own module,
/// and so is the extent of each `#[cfg(test)]` item (its refs are marked).
fn references(tree: &Tree, file: &str) -> Vec<Ref> {
    let text = blank(&tree[file]);
    let toks = tokens(&text);
    let file_module = module_of(file);
    let mut inline: Vec<(String, usize)> = Vec::new(); // (name, brace depth at open)
    let mut depth = 0usize;
    // `#[cfg(test)]` seen at this depth, its item not yet opened or ended.
    let mut pending_test: Option<usize> = None;
    // Inside a `#[cfg(test)]` item's braces, which close back to this depth.
    let mut test_until: Option<usize> = None;
    let mut refs = Vec::new();
    let module_now = |inline: &[(String, usize)]| {
        let mut m = file_module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    let is = |i: usize, t: Tok| toks.get(i).map(|x| &x.0) == Some(&t);
    let ident = |w: &str| Tok::Ident(w.to_string());
    let mut i = 0;
    while i < toks.len() {
        let in_test = test_until.is_some() || pending_test.is_some();
        match &toks[i].0 {
            Tok::Punct('#')
                if is(i + 1, Tok::Punct('['))
                    && is(i + 2, ident("cfg"))
                    && is(i + 3, Tok::Punct('('))
                    && is(i + 4, ident("test"))
                    && is(i + 5, Tok::Punct(')')) =>
            {
                if test_until.is_none() {
                    pending_test = Some(depth);
                }
                i += 7;
                continue;
            }
            Tok::Punct('{') => {
                if pending_test == Some(depth) {
                    pending_test = None;
                    test_until = Some(depth);
                }
                depth += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                if test_until == Some(depth) {
                    test_until = None;
                }
            }
            Tok::Punct(';') if pending_test == Some(depth) => pending_test = None,
            Tok::Ident(w) if w == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                    if pending_test == Some(depth) {
                        pending_test = None;
                        test_until = Some(depth);
                    }
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(w) if w == "use" => {
                let mut paths = Vec::new();
                let end = use_paths(&toks, i + 1, &[], &mut paths);
                let m = module_now(&inline);
                for (p, line) in paths {
                    if let Some(abs) = absolute(tree, &m, &p) {
                        refs.push(Ref {
                            line,
                            text: p.join("::"),
                            abs,
                            test: in_test,
                        });
                    }
                }
                i = end.max(i + 1);
                continue;
            }
            Tok::Ident(first) => {
                let after_path = i > 0 && toks[i - 1].0 == Tok::Path;
                // `pub(in crate::shard)` is a visibility, not a dependency.
                let visibility = i >= 3
                    && toks[i - 1].0 == ident("in")
                    && toks[i - 2].0 == Tok::Punct('(')
                    && toks[i - 3].0 == ident("pub");
                if !after_path && !visibility && is(i + 1, Tok::Path) {
                    let mut segs = vec![first.clone()];
                    let mut j = i + 1;
                    while is(j, Tok::Path) {
                        match toks.get(j + 1) {
                            Some((Tok::Ident(w), _)) => segs.push(w.clone()),
                            _ => break,
                        }
                        j += 2;
                    }
                    let m = module_now(&inline);
                    if let Some(abs) = absolute(tree, &m, &segs) {
                        refs.push(Ref {
                            line: toks[i].1,
                            text: segs.join("::"),
                            abs,
                            test: in_test,
                        });
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

/// The file an absolute path lands in: the longest prefix that is a module
/// file; then, if that file re-exports the next name (`pub use x::Name`),
/// wherever the re-export points. None for the crate roots.
fn resolve(
    tree: &Tree,
    abs: &[String],
    exports: &BTreeMap<String, Vec<(String, Vec<String>)>>,
) -> Option<String> {
    let mut abs = abs.to_vec();
    for _ in 0..8 {
        let (k, file) = (1..=abs.len())
            .rev()
            .find_map(|k| file_of(tree, &abs[..k]).map(|f| (k, f)))?;
        let Some(name) = abs.get(k) else {
            return Some(file);
        };
        let list = exports.get(&file).map_or(&[][..], Vec::as_slice);
        let named = list.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone());
        // `pub use x::*`: the name comes from whichever glob's file defines it.
        let globbed = || {
            list.iter().filter(|(n, _)| n == "*").find_map(|(_, t)| {
                let g = file_of(tree, t)?;
                defines(&tree[&g], name).then(|| {
                    let mut t = t.clone();
                    t.push(name.clone());
                    t
                })
            })
        };
        match named.or_else(globbed) {
            Some(target) => {
                let mut next = target;
                next.extend(abs[k + 1..].iter().cloned());
                abs = next;
            }
            None => return Some(file),
        }
    }
    None
}

/// Whether a file's text defines an item of this name at any depth.
fn defines(text: &str, name: &str) -> bool {
    let toks = tokens(&blank(text));
    toks.windows(2).any(|w| match (&w[0].0, &w[1].0) {
        (Tok::Ident(kw), Tok::Ident(n)) => {
            n == name
                && matches!(
                    kw.as_str(),
                    "struct"
                        | "enum"
                        | "union"
                        | "trait"
                        | "type"
                        | "fn"
                        | "const"
                        | "static"
                        | "mod"
                )
        }
        _ => false,
    })
}

/// `pub use` re-exports per file: (exported name, absolute target path); a
/// glob (`pub use x::*`) is ("*", path of x).
fn reexports(tree: &Tree) -> BTreeMap<String, Vec<(String, Vec<String>)>> {
    let mut out = BTreeMap::new();
    for file in tree.keys() {
        let text = blank(&tree[file]);
        let toks = tokens(&text);
        let module = module_of(file);
        let mut list = Vec::new();
        for i in 0..toks.len() {
            let is_pub_use = toks[i].0 == Tok::Ident("use".into())
                && i > 0
                && (toks[i - 1].0 == Tok::Ident("pub".into()) || toks[i - 1].0 == Tok::Punct(')'));
            if !is_pub_use {
                continue;
            }
            let mut paths = Vec::new();
            use_paths(&toks, i + 1, &[], &mut paths);
            for (p, _) in paths {
                if let (Some(name), Some(mut abs)) = (p.last(), absolute(tree, &module, &p)) {
                    if name == "*" {
                        abs.pop();
                    }
                    list.push((name.clone(), abs));
                }
            }
        }
        out.insert(file.clone(), list);
    }
    out
}

#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    line: usize,
    text: String,
    /// Only in `#[cfg(test)]` code: counts for the layer rule (a test must not
    /// reach up either) but not for circles (a writer's test may read back
    /// with the reader without coupling the two in the build that ships).
    test: bool,
}

/// Every file-to-file dependency (self-references and the crate roots left out).
fn edges(tree: &Tree) -> Vec<Edge> {
    let exports = reexports(tree);
    let mut out = Vec::new();
    for file in tree.keys() {
        if UNREAD.contains(&file.as_str()) {
            continue;
        }
        for r in references(tree, file) {
            if let Some(to) = resolve(tree, &r.abs, &exports) {
                if &to != file && !ROOTS.contains(&to.as_str()) {
                    out.push(Edge {
                        from: file.clone(),
                        to,
                        line: r.line,
                        text: r.text,
                        test: r.test,
                    });
                }
            }
        }
    }
    out
}

fn top_module(file: &str) -> &str {
    let first = file.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

fn layer(file: &str) -> Result<(u8, &'static str), String> {
    let top = top_module(file);
    LAYERS
        .iter()
        .find(|(name, _, _)| *name == top)
        .map(|(name, rank, _)| (*rank, *name))
        .ok_or_else(|| {
            format!(
                "src/{file}: the top-level module `{top}` has no layer. Add it to LAYERS in \
                 tests/tidy.rs with its rank (core 0 < io 1 < shard 2 < net 3 < cmd 4) and \
                 the reason it belongs there."
            )
        })
}

// ---------------------------------------------------------------------------
// The rules. Each returns its findings as actionable messages.

fn check_layers(tree: &Tree, edges: &[Edge]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for file in tree.keys().filter(|f| !UNREAD.contains(&f.as_str())) {
        if let Err(e) = layer(file) {
            out.insert(e);
        }
    }
    for e in edges {
        let (Ok((from_rank, from)), Ok((to_rank, to))) = (layer(&e.from), layer(&e.to)) else {
            continue;
        };
        if to_rank > from_rank {
            out.insert(format!(
                "src/{}:{}: `{}` — layer rule: {from} (rank {from_rank}) names src/{} in {to} \
                 (rank {to_rank}); lower layers must never name higher ones \
                 (core < io < shard < net < cmd). Move the shared item down to the lowest \
                 layer that needs it (plain data usually belongs in core/), or pass it in \
                 from above as a parameter or trait.",
                e.from, e.line, e.text, e.to
            ));
        }
    }
    out.into_iter().collect()
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(edges: &[Edge]) -> Vec<Vec<String>> {
    let mut adj: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges.iter().filter(|e| !e.test) {
        adj.entry(&e.from).or_default().insert(&e.to);
        adj.entry(&e.to).or_default();
    }
    struct St<'a> {
        adj: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for &w in &s.adj[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        adj: &adj,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in adj.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// The imports that tie one circle together, one line each.
fn circle_evidence(circle: &[String], edges: &[Edge]) -> String {
    let mut ties: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for e in edges.iter().filter(|e| !e.test) {
        if circle.contains(&e.from) && circle.contains(&e.to) {
            ties.entry((&e.from, &e.to))
                .or_default()
                .push(format!("`{}` (line {})", e.text, e.line));
        }
    }
    ties.into_iter()
        .map(|((from, to), names)| {
            let mut names = names;
            names.dedup();
            format!("    src/{from} -> src/{to}: {}", names.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_circles(edges: &[Edge], known: &[&[&str]]) -> Vec<String> {
    let found = circles(edges);
    let known: Vec<Vec<String>> = known
        .iter()
        .map(|c| {
            let mut v: Vec<String> = c.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        })
        .collect();
    let mut out = Vec::new();
    for c in &found {
        if !known.contains(c) {
            out.push(format!(
                "circle rule: these files import each other in a circle (a change to one can \
                 break any other); break it by moving what both need into a lower module or by \
                 passing it in, so that imports point one way:\n  [{}]\n{}\n  (If this is a \
                 KNOWN_CIRCLES entry that shrank, replace the entry by this list.)",
                c.iter()
                    .map(|f| format!("\"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                circle_evidence(c, edges)
            ));
        }
    }
    for k in &known {
        if !found.contains(k) {
            out.push(format!(
                "circle rule: KNOWN_CIRCLES in tests/tidy.rs lists [{}], which is no longer a \
                 circle exactly (it was broken or shrank). Delete the entry, or replace it by \
                 the smaller circle reported above; the list may only shrink.",
                k.join(", ")
            ));
        }
    }
    out
}

/// Where shard/ and net/ touch the real filesystem.
fn fs_uses(tree: &Tree) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for (file, text) in tree {
        if !matches!(top_module(file), "shard" | "net") {
            continue;
        }
        let b = blank(text);
        let lines: Vec<&str> = text.lines().collect();
        let mut hits = BTreeSet::new();
        for needle in ["File::open", "File::create", "OpenOptions"] {
            for (at, _) in b.match_indices(needle) {
                let before = b[..at].chars().next_back();
                let word_start = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
                // `std::fs::File::open` or a bare `File::open`; `TableFile::open` is not.
                if word_start || b[..at].ends_with("fs::") {
                    hits.insert(line_of(&b, at));
                }
            }
        }
        // std::fs as a path or in a use tree (`use std::{fs, io}`).
        let toks = tokens(&b);
        for i in 0..toks.len() {
            if toks[i].0 == Tok::Ident("use".into()) {
                let mut paths = Vec::new();
                use_paths(&toks, i + 1, &[], &mut paths);
                for (p, line) in paths {
                    if p.len() >= 2 && p[0] == "std" && p[1] == "fs" {
                        hits.insert(line);
                    }
                }
            }
            if toks[i].0 == Tok::Ident("std".into())
                && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Path)
                && toks.get(i + 2).map(|t| &t.0) == Some(&Tok::Ident("fs".into()))
            {
                hits.insert(toks[i].1);
            }
        }
        for line in hits {
            let shown = lines.get(line - 1).map_or("", |l| l.trim()).to_string();
            out.push((file.clone(), line, shown));
        }
    }
    out
}

fn check_fs(tree: &Tree, allowed: &[(&str, &str, &str)]) -> Vec<String> {
    let uses = fs_uses(tree);
    let mut out = Vec::new();
    for (file, line, text) in &uses {
        let ok = allowed
            .iter()
            .any(|(f, frag, _)| f == file && text.contains(frag));
        if !ok {
            out.push(format!(
                "src/{file}:{line}: `{text}` — disk rule: shard/ and net/ never touch the \
                 filesystem directly; every disk byte goes through the Disk seam (src/io: \
                 `Disk`, `DiskFile`; DmaDisk, StdDisk, SimDisk) so that the simulation and the \
                 power-loss tests see it. Add what you need to src/io and call it through the \
                 Disk trait; if this is not storage at all (e.g. procfs), add it to FS_ALLOWED \
                 in tests/tidy.rs with the reason."
            ));
        }
    }
    for (f, frag, _) in allowed {
        if !uses
            .iter()
            .any(|(file, _, text)| file == f && text.contains(frag))
        {
            out.push(format!(
                "disk rule: FS_ALLOWED in tests/tidy.rs allows `{frag}` in src/{f}, which is no \
                 longer there; delete the entry (the list may only shrink)."
            ));
        }
    }
    out
}

/// Every function with a body: (file, line of `fn`, name, lines).
fn functions(tree: &Tree) -> Vec<(String, usize, String, usize)> {
    let mut out = Vec::new();
    for (file, text) in tree {
        let b = blank(text);
        let toks = tokens(&b);
        for i in 0..toks.len() {
            if toks[i].0 != Tok::Ident("fn".into()) {
                continue;
            }
            let Some((Tok::Ident(name), _)) = toks.get(i + 1) else {
                continue; // `fn(` pointer types
            };
            // The body opens at the first `{` outside () and [] (a `;` there
            // first means a declaration without a body).
            let mut j = i + 2;
            let mut nest = 0i32;
            let open = loop {
                match toks.get(j).map(|t| &t.0) {
                    None => break None,
                    Some(Tok::Punct('(' | '[')) => nest += 1,
                    Some(Tok::Punct(')' | ']')) => nest -= 1,
                    Some(Tok::Punct(';')) if nest == 0 => break None,
                    Some(Tok::Punct('{')) if nest == 0 => break Some(j),
                    _ => {}
                }
                j += 1;
            };
            let Some(open) = open else { continue };
            let mut depth = 0;
            let mut k = open;
            while k < toks.len() {
                match toks[k].0 {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            let end = toks.get(k).map_or(toks[open].1, |t| t.1);
            out.push((file.clone(), toks[i].1, name.clone(), end - toks[i].1 + 1));
        }
    }
    out.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    out
}

fn longest_report(fns: &[(String, usize, String, usize)]) -> String {
    fns.iter()
        .take(5)
        .map(|(f, l, name, n)| format!("    {n:>4} lines  src/{f}:{l}  fn {name}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_fn_lengths(tree: &Tree, max: usize) -> Vec<String> {
    let fns = functions(tree);
    let mut out = Vec::new();
    for (file, line, name, n) in &fns {
        if *n > max {
            out.push(format!(
                "src/{file}:{line}: fn {name} is {n} lines — length rule: no function may be \
                 longer than FN_LINES_MAX = {max} (a ratchet: today's maximum, only ever \
                 lowered). Split it into named steps. The longest functions now:\n{}",
                longest_report(&fns)
            ));
        }
    }
    out
}

fn check_file_lengths(tree: &Tree, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in tree {
        let n = text.lines().count();
        if n > max {
            out.push(format!(
                "src/{file}: {n} lines — length rule: no file may be longer than \
                 FILE_LINES_MAX = {max} (a ratchet: only ever lowered). Split it into a folder \
                 of modules that each own one thing."
            ));
        }
    }
    out
}

fn check_docs(tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in tree {
        if generated(text) {
            continue;
        }
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.trim_start().starts_with("//!") {
            out.push(format!(
                "src/{file}:1: doc rule: every module starts with a `//!` comment saying what it \
                 owns and what it must never do (see src/core/wal_format.rs, src/io/disk.rs, \
                 src/core/status.rs). Add one above the first line."
            ));
        }
    }
    out
}

fn verdict(rule: &str, findings: Vec<String>) {
    assert!(
        findings.is_empty(),
        "tests/tidy.rs: {} finding(s) of the {rule}:\n\n{}\n",
        findings.len(),
        findings.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// The rules run on the real tree.

#[test]
fn lower_layers_never_name_higher_ones() {
    let tree = src_tree();
    verdict("layer rule", check_layers(&tree, &edges(&tree)));
}

#[test]
fn no_new_import_circles_and_known_ones_still_exist() {
    let tree = src_tree();
    verdict("circle rule", check_circles(&edges(&tree), KNOWN_CIRCLES));
}

#[test]
fn shard_and_net_reach_the_disk_only_through_the_disk_seam() {
    verdict("disk rule", check_fs(&src_tree(), FS_ALLOWED));
}

#[test]
fn no_function_or_file_above_its_length_ratchet() {
    let tree = src_tree();
    let fns = functions(&tree);
    // Shown on every run (with --nocapture) so that cutting is easy to aim.
    println!("longest functions:\n{}", longest_report(&fns));
    let mut findings = check_fn_lengths(&tree, FN_LINES_MAX);
    findings.extend(check_file_lengths(&tree, FILE_LINES_MAX));
    verdict("length rule", findings);
}

#[test]
fn every_module_has_a_doc_comment() {
    verdict("doc rule", check_docs(&src_tree()));
}

#[test]
fn the_ratchets_are_tight() {
    // A ratchet left above today's maximum lets the next long function in
    // silently: when the longest shrinks, lower the constant with it.
    let tree = src_tree();
    let longest_fn = functions(&tree).first().map_or(0, |f| f.3);
    let longest_file = tree.values().map(|t| t.lines().count()).max().unwrap_or(0);
    assert_eq!(
        (FN_LINES_MAX, FILE_LINES_MAX),
        (longest_fn, longest_file),
        "tests/tidy.rs: lower FN_LINES_MAX to {longest_fn} and FILE_LINES_MAX to {longest_file} \
         (today's maxima); the ratchets only go down. Longest functions:\n{}",
        longest_report(&functions(&tree))
    );
}

// ---------------------------------------------------------------------------
// Each rule catches a bad example (a rule that cannot fail is a defect).

fn tree(files: &[(&str, &str)]) -> Tree {
    files
        .iter()
        .map(|(f, t)| (f.to_string(), format!("//! test module\n{t}")))
        .collect()
}

#[test]
fn blanking_hides_comments_strings_and_chars_but_keeps_lines() {
    let src = "let a = \"{ crate::net }\"; // crate::net {\nlet b = '{'; let c = '\\''; \
               let r = r#\"}\"#; fn f<'a>(x: &'a str) {}\n/* { /* nested } */ */ let d = 1;";
    let b = blank(src);
    assert_eq!(b.lines().count(), src.lines().count());
    assert!(!b.contains("crate::net"));
    assert_eq!(b.matches('{').count(), 1, "{b}");
    assert_eq!(b.matches('}').count(), 1, "{b}");
    assert!(b.contains("fn f<'a>(x: &'a str)"), "{b}");
    assert!(b.contains("let d = 1;"));
}

#[test]
fn layer_rule_catches_an_upward_import() {
    let t = tree(&[
        ("lib.rs", "pub mod core; pub mod net;"),
        ("core/mod.rs", "pub mod types;"),
        // All the spellings: a grouped use, an inline path, super:: from a
        // nested module, and `use` inside a function.
        (
            "core/types.rs",
            "use crate::{net::codec::Frame, core::mod_ok};\nfn f() { crate::net::codec::go(); }\n\
             mod tests { use super::super::super::net::codec; }",
        ),
        ("net/mod.rs", "pub mod codec;"),
        ("net/codec.rs", "use crate::core::types::T;"),
    ]);
    let found = check_layers(&t, &edges(&t));
    assert_eq!(found.len(), 3, "{found:#?}");
    for (i, line) in [2, 3, 4].into_iter().enumerate() {
        assert!(
            found[i].starts_with(&format!("src/core/types.rs:{line}: `")),
            "{found:#?}"
        );
    }
    assert!(found
        .iter()
        .all(|f| f.contains("layer rule") && f.contains("names src/net/codec.rs")));
    // The downward import (net -> core) is fine.
    assert!(!found.iter().any(|f| f.contains("src/net/codec.rs:")));
}

#[test]
fn layer_rule_allows_the_binary_to_import_down_and_names_unknown_modules() {
    let t = tree(&[
        ("main.rs", "mod cmd;\nfn main() { cmd::serve::run(); }"),
        ("cmd/mod.rs", "pub mod serve;"),
        (
            "cmd/serve.rs",
            "use corekv::shard::Engine; use crate::cmd::mod_x;",
        ),
        ("shard/mod.rs", "pub struct Engine;"),
        ("widgets/mod.rs", "use crate::core::x;"),
    ]);
    let e = edges(&t);
    assert!(
        e.iter()
            .any(|e| e.from == "main.rs" && e.to == "cmd/serve.rs"),
        "{e:#?}"
    );
    let found = check_layers(&t, &e);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("`widgets` has no layer"), "{found:#?}");
}

#[test]
fn circle_rule_catches_a_new_circle_and_a_stale_allowlist_entry() {
    let t = tree(&[
        (
            "shard/mod.rs",
            "pub mod a; pub mod b; pub mod c; pub use c::Thing;",
        ),
        ("shard/a.rs", "use super::b::B;"),
        // Through the parent's re-export: b -> c, not b -> mod.rs.
        (
            "shard/b.rs",
            "use super::Thing; fn f() -> crate::shard::a::A {}",
        ),
        // A test-only back edge is no circle (c's tests may use a).
        (
            "shard/c.rs",
            "pub(in crate::shard::a) struct Thing;\n#[cfg(test)]\nmod tests { use crate::shard::a::A; }\n\
             #[cfg(test)] use super::a::X;\n#[cfg(test)] fn t() { super::a::f(); }",
        ),
    ]);
    let e = edges(&t);
    let test_only: Vec<_> = e.iter().filter(|e| e.test).map(|e| e.line).collect();
    assert_eq!(test_only, [4, 5, 6], "{e:#?}");
    assert!(
        e.iter()
            .any(|e| e.from == "shard/b.rs" && e.to == "shard/c.rs"),
        "{e:#?}"
    );
    let found = check_circles(&e, &[]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("[\"shard/a.rs\", \"shard/b.rs\"]"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("src/shard/a.rs -> src/shard/b.rs: `super::b::B` (line 2)"),
        "{}",
        found[0]
    );
    assert!(found[0].contains("`crate::shard::a::A`"), "{}", found[0]);
    // Allowlisted: quiet. Allowlisted but gone: caught.
    assert!(check_circles(&e, &[&["shard/b.rs", "shard/a.rs"]]).is_empty());
    let stale = check_circles(
        &e,
        &[&["shard/a.rs", "shard/b.rs"], &["cmd/x.rs", "cmd/y.rs"]],
    );
    assert_eq!(stale.len(), 1, "{stale:#?}");
    assert!(stale[0].contains("no longer a circle"), "{stale:#?}");
    // A shrunken circle is both new and stale.
    let shrunk = check_circles(&e, &[&["shard/a.rs", "shard/b.rs", "shard/c.rs"]]);
    assert_eq!(shrunk.len(), 2, "{shrunk:#?}");
}

#[test]
fn circle_rule_resolves_super_in_nested_and_inline_modules() {
    let t = tree(&[
        ("shard/mod.rs", "pub mod lsm; pub mod x;"),
        (
            "shard/lsm/mod.rs",
            "pub mod table; pub use self::table::Table;",
        ),
        // super:: of shard/lsm/table.rs is shard/lsm (its parent).
        (
            "shard/lsm/table.rs",
            "use super::super::x::X; mod tests { use super::*; }",
        ),
        ("shard/x.rs", "use super::lsm::Table;"),
    ]);
    let e = edges(&t);
    let found = check_circles(&e, &[]);
    assert_eq!(found.len(), 1, "{e:#?}");
    assert!(
        found[0].contains("\"shard/lsm/table.rs\", \"shard/x.rs\""),
        "{}",
        found[0]
    );
}

#[test]
fn disk_rule_catches_std_fs_in_shard_and_net_and_a_stale_allowance() {
    let t = tree(&[
        ("shard/a.rs", "use std::{fs, io};"),
        ("shard/b.rs", "fn f() { let _ = std::fs::read(\"x\"); }"),
        (
            "net/c.rs",
            "use std::fs::File;\nfn g() { File::open(p); let o = OpenOptions::new(); }",
        ),
        // Not caught: a type whose name ends in File, text in a string or
        // comment, and std::fs in io/ (which is where it belongs).
        (
            "shard/d.rs",
            "fn h() { TableFile::open(d); let s = \"std::fs\"; } // std::fs",
        ),
        ("io/e.rs", "use std::fs;"),
    ]);
    let found = check_fs(&t, &[]);
    assert_eq!(found.len(), 4, "{found:#?}");
    for f in [
        "src/shard/a.rs:2",
        "src/shard/b.rs:2",
        "src/net/c.rs:2",
        "src/net/c.rs:3",
    ] {
        assert!(
            found.iter().any(|x| x.starts_with(f)),
            "{f} missing in {found:#?}"
        );
    }
    assert!(found.iter().all(|x| x.contains("Disk seam")));
    let allowed = check_fs(
        &t,
        &[
            ("shard/a.rs", "use std::{fs, io};", "why"),
            ("net/z.rs", "x", "gone"),
        ],
    );
    assert!(
        !allowed.iter().any(|x| x.starts_with("src/shard/a.rs")),
        "{allowed:#?}"
    );
    assert!(
        allowed.iter().any(|x| x.contains("no longer there")),
        "{allowed:#?}"
    );
}

#[test]
fn length_rule_catches_a_long_function_and_a_long_file() {
    let body: String = (0..30)
        .map(|i| format!("    let s{i} = \"}}\"; // {{\n"))
        .collect();
    let t = tree(&[(
        "core/a.rs",
        &format!(
            "trait T {{ fn decl(&self) -> [u8; 4]; }}\nfn short() {{ }}\nfn long(x: [u8; 2]) -> u8 \
             where u8: Copy {{\n{body}    let c = '}}';\n    0\n}}\n"
        ),
    )]);
    let fns = functions(&t);
    assert_eq!(fns.len(), 2, "{fns:#?}"); // the declaration has no body
    assert_eq!(
        (fns[0].2.as_str(), fns[0].1, fns[0].3),
        ("long", 4, 34),
        "{fns:#?}"
    );
    let found = check_fn_lengths(&t, 33);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("src/core/a.rs:4: fn long is 34 lines"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("34 lines  src/core/a.rs:4  fn long"),
        "{}",
        found[0]
    );
    assert!(check_fn_lengths(&t, 34).is_empty());
    assert_eq!(check_file_lengths(&t, 30).len(), 1);
    assert!(check_file_lengths(&t, 100).is_empty());
}

#[test]
fn doc_rule_catches_a_module_without_a_doc_comment() {
    let mut t = tree(&[("core/good.rs", "fn f() {}")]);
    t.insert("core/bad.rs".into(), "// a plain comment\nfn f() {}".into());
    t.insert(
        "core/outer.rs".into(),
        "/// an item doc, not a module doc\nfn f() {}".into(),
    );
    t.insert(
        "core/gen.rs".into(),
        "// @generated by a tool\nfn f() {}".into(),
    );
    let found = check_docs(&t);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("src/core/bad.rs:1: doc rule"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("src/core/outer.rs:1: doc rule"),
        "{found:#?}"
    );
}

#[test]
fn circle_rule_follows_glob_reexports_to_the_defining_file() {
    let t = tree(&[
        ("shard/mod.rs", "pub mod lsm; pub mod x;"),
        (
            "shard/lsm/mod.rs",
            "pub mod other; pub mod table; pub use self::{other::*, table::*};",
        ),
        ("shard/lsm/other.rs", "pub struct Other;"),
        (
            "shard/lsm/table.rs",
            "use crate::shard::x::X;\npub struct Table;",
        ),
        (
            "shard/x.rs",
            "use super::lsm::Table;\nfn f(_: super::lsm::Other) {}",
        ),
    ]);
    let e = edges(&t);
    let from_x: BTreeSet<&str> = e
        .iter()
        .filter(|e| e.from == "shard/x.rs")
        .map(|e| e.to.as_str())
        .collect();
    assert_eq!(
        from_x,
        BTreeSet::from(["shard/lsm/other.rs", "shard/lsm/table.rs"]),
        "{e:#?}"
    );
    let found = check_circles(&e, &[]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("[\"shard/lsm/table.rs\", \"shard/x.rs\"]"),
        "{}",
        found[0]
    );
}

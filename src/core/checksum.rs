//! CRC32C (Castagnoli), hardware accelerated where the CPU has it.
//!
//! Every on-disk structure carries one. The value stored is the plain CRC32C of
//! the bytes it covers; each structure's doc says which bytes those are.

pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continue a CRC over a second slice, as if both were one.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn append_equals_whole() {
        let data = b"hello, corekv";
        assert_eq!(crc32c_append(crc32c(&data[..5]), &data[5..]), crc32c(data));
    }
}

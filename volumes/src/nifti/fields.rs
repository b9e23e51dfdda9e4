//! Byte-order-aware loads at fixed offsets of a header buffer, for the headers parsed by hand (NIfTI-2,
//! Analyze 7.5). The buffer's length is checked once by the caller ([`Fields::new`]), so no load can fail.

use super::raw::Endian;

/// A header buffer of at least `N` bytes read in one byte order.
pub struct Fields<'a, const N: usize> {
    bytes: &'a [u8; N],
    endian: Endian,
}

impl<'a, const N: usize> Fields<'a, N> {
    /// `None` when `bytes` is shorter than `N`.
    pub fn new(bytes: &'a [u8], endian: Endian) -> Option<Self> {
        let bytes = bytes.get(..N)?.try_into().ok()?;
        Some(Fields { bytes, endian })
    }

    pub fn raw(&self) -> &'a [u8; N] {
        self.bytes
    }

    pub fn array<const M: usize>(&self, at: usize) -> [u8; M] {
        let mut out = [0u8; M];
        out.copy_from_slice(&self.bytes[at..at + M]);
        out
    }

    fn ordered<const M: usize>(&self, at: usize) -> [u8; M] {
        let mut b = self.array::<M>(at);
        if self.endian == Endian::Big {
            b.reverse();
        }
        b
    }

    pub fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.ordered(at))
    }
    pub fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.ordered(at))
    }
    pub fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.ordered(at))
    }
    pub fn f32(&self, at: usize) -> f32 {
        f32::from_le_bytes(self.ordered(at))
    }
    pub fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.ordered(at))
    }
    pub fn f64s<const M: usize>(&self, at: usize) -> [f64; M] {
        std::array::from_fn(|i| self.f64(at + 8 * i))
    }
    pub fn f32s<const M: usize>(&self, at: usize) -> [f64; M] {
        std::array::from_fn(|i| f64::from(self.f32(at + 4 * i)))
    }
    pub fn i16s<const M: usize>(&self, at: usize) -> [i16; M] {
        std::array::from_fn(|i| self.i16(at + 2 * i))
    }
}

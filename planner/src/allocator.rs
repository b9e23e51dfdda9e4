//! Allocator models: what the device reports as used when the step holds a given set of tensors.
//!
//! CPU (flex) uses the system allocator: reserved = in use. CUDA (cubecl 0.10, `MemoryConfiguration::
//! SubSlices`, read in `cubecl-runtime/src/memory_management/memory_manage.rs`): allocations are padded to
//! 512 bytes and carved out of pages; pages are allocated whole and kept. With `max_page = total / 4`,
//! sliced pools have pages `max_page/4, /16, ...` (while the previous page ≥ 32 MiB), each accepting
//! slices up to `page / 2^k` (k = 1 for the largest), plus a final pool of `max_page` pages. A pool also
//! accepts a size within 20 % of its page. An allocation no pool accepts fails (`BufferTooBig`).

const MIB: u64 = 1 << 20;
/// cubecl stops splitting pages below this size.
const CUBECL_MIN_SPLIT_PAGE: u64 = 32 * MIB;

#[derive(Debug, Clone)]
struct Pool {
    page_size: u64,
    max_slice: u64,
    /// Free bytes of each page (fragmentation inside a page is not modelled: freed slices coalesce).
    pages: Vec<u64>,
}

impl Pool {
    fn accepts(&self, size: u64) -> bool {
        self.max_slice >= size || (self.page_size >= size && (self.page_size - size) * 5 < self.page_size)
    }
}

/// Where an allocation landed, to free it later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pool: usize,
    page: usize,
    size: u64,
}

/// One device's allocator as the timeline drives it.
#[derive(Debug, Clone)]
pub(crate) struct AllocatorSim {
    alignment: u64,
    pools: Vec<Pool>,
    in_use: u64,
    reserved: u64,
}

impl Slot {
    /// Bytes taken after padding.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl AllocatorSim {
    /// The system allocator: every byte requested is a byte used.
    pub fn system(alignment: u64) -> Self {
        Self { alignment: alignment.max(1), pools: Vec::new(), in_use: 0, reserved: 0 }
    }

    /// cubecl's SubSlices pools for a device with `total_bytes` of memory.
    pub fn cubecl(total_bytes: u64, alignment: u64) -> Self {
        let alignment = alignment.max(1);
        let max_page = total_bytes / 4;
        let mut sliced = Vec::new();
        let mut current = max_page;
        let mut base = 1u32;
        while current >= CUBECL_MIN_SPLIT_PAGE {
            current = (current / 4).next_multiple_of(alignment);
            sliced.push(Pool { page_size: current, max_slice: current / 2u64.pow(base), pages: Vec::new() });
            base += 1;
        }
        sliced.reverse();
        let last = max_page / alignment * alignment;
        sliced.push(Pool { page_size: last, max_slice: last, pages: Vec::new() });
        Self { alignment, pools: sliced, in_use: 0, reserved: 0 }
    }

    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Bytes the device sees taken: pages for pooled allocators, the live bytes otherwise.
    pub fn reserved(&self) -> u64 {
        if self.pools.is_empty() { self.in_use } else { self.reserved }
    }

    /// Allocates `bytes`; `Err(size)` when no pool accepts it (cubecl's `BufferTooBig`).
    pub fn alloc(&mut self, bytes: u64) -> Result<Slot, u64> {
        let size = bytes.next_multiple_of(self.alignment);
        self.in_use += size;
        if self.pools.is_empty() || size == 0 {
            return Ok(Slot { pool: usize::MAX, page: 0, size });
        }
        let Some(p) = self.pools.iter().position(|p| p.accepts(size)) else {
            self.in_use -= size;
            return Err(size);
        };
        let pool = &mut self.pools[p];
        if let Some(page) = pool.pages.iter().position(|&free| free >= size) {
            pool.pages[page] -= size;
            return Ok(Slot { pool: p, page, size });
        }
        let page_size = pool.page_size.max(size);
        pool.pages.push(page_size - size);
        self.reserved += page_size;
        Ok(Slot { pool: p, page: pool.pages.len() - 1, size })
    }

    pub fn free(&mut self, slot: Slot) {
        self.in_use -= slot.size;
        if slot.pool != usize::MAX {
            self.pools[slot.pool].pages[slot.page] += slot.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_allocator_reserves_what_is_used() {
        let mut a = AllocatorSim::system(1);
        let s = a.alloc(1000).unwrap();
        assert_eq!((a.in_use(), a.reserved()), (1000, 1000));
        a.free(s);
        assert_eq!(a.reserved(), 0);
    }

    #[test]
    fn cubecl_pads_to_512_and_reserves_whole_pages() {
        let total = 80u64 << 30;
        let mut a = AllocatorSim::cubecl(total, 512);
        // 80 GiB: max_page 20 GiB; the smallest sliced pool has 20 MiB pages with slices up to 640 KiB.
        assert_eq!(a.pools[0].page_size, 20 * MIB);
        assert_eq!(a.pools[0].max_slice, 20 * MIB / 32);
        let s = a.alloc(1000).unwrap();
        assert_eq!(a.in_use(), 1024);
        assert_eq!(a.reserved(), 20 * MIB);
        // A second small allocation shares the page.
        let _t = a.alloc(4096).unwrap();
        assert_eq!(a.reserved(), 20 * MIB);
        a.free(s);
        assert_eq!(a.in_use(), 4096);
        assert_eq!(a.reserved(), 20 * MIB, "pages are kept after frees");
    }

    #[test]
    fn cubecl_rejects_buffers_over_a_quarter_of_memory() {
        let mut a = AllocatorSim::cubecl(16 << 30, 512);
        assert!(a.alloc(5 << 30).is_err());
        assert!(a.alloc(3 << 30).is_ok());
    }
}

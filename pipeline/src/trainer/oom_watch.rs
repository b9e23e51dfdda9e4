//! Recognising a CUDA out-of-memory wherever it surfaces.
//!
//! cubecl allocates on its device-runner thread, not on the training thread. A failed allocation panics
//! there (`can't allocate buffer of size: N`, or an unwrapped `BufferTooBig`); the runner catches that
//! panic and logs only `Task failed: Any { .. }`, and the training thread fails later with a generic
//! execution error that need not mention memory at all (`../shared/reference/burn-0.21.md` §8). Matching
//! the training thread's own error would miss exactly the common case, so a panic hook, installed once,
//! notes the first out-of-memory panic of *any* thread, and an attempt that fails after one was noted is
//! an out-of-memory whatever its own error says.

// Only the CUDA arm watches; a build without the `cuda` feature keeps the module for its tests.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::sync::{Mutex, MutexGuard, Once};

/// The first out-of-memory panic message noted since [`watch`] was last called.
static NOTED: Mutex<Option<String>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Installs the hook (once per process; the previous hook still runs after it) and forgets anything
/// noted before, so that an attempt sees only its own out-of-memory.
pub fn watch() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(message) = info.payload_as_str()
                && is_out_of_memory(message)
            {
                noted().get_or_insert_with(|| message.to_string());
            }
            previous(info);
        }));
    });
    *noted() = None;
}

/// The out-of-memory message noted since the last [`watch`], if any; clears it.
pub fn take_noted() -> Option<String> {
    noted().take()
}

/// cubecl's allocation failure (`can't allocate buffer of size`, `BufferTooBig`) and the driver's
/// `CUDA_ERROR_OUT_OF_MEMORY`, in a panic message or an execution error's text. Whole phrases only: a
/// bare "oom" or "allocate" would also match "zoom" or "deallocate".
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["can't allocate", "cannot allocate", "failed to allocate", "out of memory", "out_of_memory", "buffertoobig"]
        .iter()
        .any(|k| m.contains(k))
}

/// The slot, usable even after a thread panicked while holding it (it holds a plain `Option<String>`).
fn noted() -> MutexGuard<'static, Option<String>> {
    NOTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_cubecl_and_driver_messages_only() {
        assert!(is_out_of_memory("can't allocate buffer of size: 123"));
        assert!(is_out_of_memory("called `Result::unwrap()` on an `Err` value: BufferTooBig { size: 9 }"));
        assert!(is_out_of_memory("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        for other in ["index out of bounds", "zoom factor", "deallocate twice", "room for 3 tensors"] {
            assert!(!is_out_of_memory(other), "{other}");
        }
    }

    /// The case the hook exists for: the allocation panics on another thread (as on cubecl's runner),
    /// and only the hook sees its message.
    #[test]
    fn an_out_of_memory_panic_on_another_thread_is_noted_and_taken_once() {
        watch();
        let runner = std::thread::spawn(|| panic!("can't allocate buffer of size: 4096 (test: runner thread)"));
        assert!(runner.join().is_err());
        let noted = take_noted();
        assert!(noted.as_deref().is_some_and(|m| m.contains("4096")), "{noted:?}");
        assert_eq!(take_noted(), None, "taking clears it");
        let other = std::thread::spawn(|| panic!("index out of bounds (test: not a memory error)"));
        assert!(other.join().is_err());
        assert_eq!(take_noted(), None, "other panics are not noted");
    }
}

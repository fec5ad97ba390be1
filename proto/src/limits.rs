//! Size limits applied when a message is opened: a module of its own, so
//! that [`crate::envelope`] and [`crate::validate`] both use it without
//! using each other.

/// Size limits applied when opening a message (see the broker's config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest encoded envelope accepted, in bytes.
    pub max_message_bytes: usize,
    /// The most items accepted in any repeated field.
    pub max_repeated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            max_repeated: 256,
        }
    }
}

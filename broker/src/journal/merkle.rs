//! Merkle trees for the tamper-evident audit journal, as in Certificate
//! Transparency: RFC 6962 §2.1 and its successor RFC 9162 §2.1.
//!
//! - Hashing (RFC 9162 §2.1.1): a leaf is `SHA-256(0x00 || data)`, an inner
//!   node `SHA-256(0x01 || left || right)`, and the empty tree's root is
//!   `SHA-256("")`. The prefixes keep a leaf from passing for a node.
//! - The tree over `n` leaves splits at `k`, the largest power of two smaller
//!   than `n` ([`root`], [`subtree_root`]).
//! - [`Frontier`] keeps only the right edge of the tree (one hash per perfect
//!   subtree, at most `log2(n) + 1` of them), so the journal can keep it on
//!   disk, append in O(log n) and compute the root without the leaves.
//! - Inclusion proofs ([`inclusion_proof`], [`verify_inclusion`]) show that a
//!   leaf is in a tree; consistency proofs ([`consistency_proof`],
//!   [`verify_consistency`]) show that an older tree is a prefix of a newer one,
//!   i.e. that nothing already journaled was changed or removed.
//!
//! Everything here is pure: no I/O, no clock. Proof *generation* takes all the
//! leaf hashes of the tree and costs O(n) node hashes at worst (each leaf is
//! hashed into at most one proof element); verification costs O(log n).
//!
//! The hashes over which proofs are built are leaf hashes ([`leaf_hash`] of
//! each journal record), not the records themselves.

use mev_proto::envelope::sha256;

/// A SHA-256 digest: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree, `SHA-256("")` (RFC 9162 §2.1.1):
/// `e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The prefix of a leaf's hash input (RFC 6962 §2.1, RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// The prefix of an inner node's hash input (RFC 6962 §2.1, RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a proof was not generated or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is out of range for a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked for, or given, from a bigger tree to a smaller one.
    #[error("old tree size {old_size} is greater than new tree size {new_size}")]
    OldSizeExceedsNewSize { old_size: u64, new_size: u64 },
    /// The inclusion proof does not have the number of hashes the index and size call for.
    #[error(
        "wrong inclusion proof length for leaf {index} in a tree of size {size}: \
         expected {expected} hashes, got {got}"
    )]
    InclusionProofLength {
        index: u64,
        size: u64,
        expected: usize,
        got: usize,
    },
    /// The consistency proof does not have the number of hashes the sizes call for.
    #[error(
        "wrong consistency proof length from size {old_size} to size {new_size}: \
         expected {expected} hashes, got {got}"
    )]
    ConsistencyProofLength {
        old_size: u64,
        new_size: u64,
        expected: usize,
        got: usize,
    },
    /// The inclusion proof leads to another root than the one given.
    #[error(
        "root mismatch: the inclusion proof yields root {}, expected {}",
        to_hex(.computed),
        to_hex(.expected)
    )]
    RootMismatch { computed: Hash, expected: Hash },
    /// The consistency proof leads to another old root than the one given.
    #[error(
        "old root mismatch: the consistency proof yields old root {}, expected {}",
        to_hex(.computed),
        to_hex(.expected)
    )]
    OldRootMismatch { computed: Hash, expected: Hash },
    /// The consistency proof leads to another new root than the one given.
    #[error(
        "new root mismatch: the consistency proof yields new root {}, expected {}",
        to_hex(.computed),
        to_hex(.expected)
    )]
    NewRootMismatch { computed: Hash, expected: Hash },
    /// Two trees of the same size are consistent only if their roots are equal.
    #[error(
        "trees of the same size {size} have different roots: old {}, new {}",
        to_hex(.old_root),
        to_hex(.new_root)
    )]
    SameSizeRootsDiffer {
        size: u64,
        old_root: Hash,
        new_root: Hash,
    },
}

/// Why a hash in hex was refused ([`from_hex`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("a hash in hex has 64 digits, got {got} characters")]
    Length { got: usize },
    #[error("invalid hex digit {found:?} at position {position}")]
    Digit { position: usize, found: char },
}

/// Why a serialized [`Frontier`] was refused ([`Frontier::deserialize`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    #[error("a serialized frontier starts with an 8-byte size, got only {got} bytes")]
    TooShort { got: usize },
    #[error(
        "a serialized frontier of size {size} has {expected} bytes \
         (8 + 32 × {hashes} hashes), got {got}"
    )]
    Length {
        size: u64,
        hashes: usize,
        expected: usize,
        got: usize,
    },
}

/// The hash of a leaf: `SHA-256(0x00 || data)` (RFC 6962 §2.1, RFC 9162 §2.1.1).
///
/// Copies `data` once into a buffer with the prefix.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(1 + data.len());
    buf.push(LEAF_PREFIX);
    buf.extend_from_slice(data);
    sha256(&buf)
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`
/// (RFC 6962 §2.1, RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The Merkle Tree Hash `MTH(D[n])` of a whole tree, given the leaf hashes
/// (RFC 6962 §2.1, RFC 9162 §2.1.1): [`EMPTY_ROOT`] for no leaves, the leaf
/// hash for one, otherwise `node_hash(MTH(D[0:k]), MTH(D[k:n]))` where `k` is
/// the largest power of two smaller than `n`.
///
/// n − 1 node hashes, no allocation. To follow a growing tree, keep a
/// [`Frontier`] instead.
pub fn root(leaves: &[Hash]) -> Hash {
    subtree_root(leaves)
}

/// `MTH` of a range of consecutive leaf hashes, as if they were a tree of their
/// own (RFC 6962 §2.1); the proofs are made of such subtree roots. Equal to
/// [`root`] (and [`EMPTY_ROOT`] for an empty slice).
///
/// n − 1 node hashes; recursion depth at most 64; no allocation.
pub fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): where
/// RFC 6962 §2.1 splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a Merkle tree (a "compact range" of its leaves `[0, n)`):
/// the roots of the perfect subtrees the tree decomposes into, one per set bit
/// of `n`, leftmost (biggest) first. At most 64 hashes; `log2(n) + 1` at most
/// for a tree of `n` leaves.
///
/// Appending a leaf merges equal-sized subtrees like a binary counter (O(log n)
/// node hashes, amortized O(1)); [`Frontier::root`] folds the edge from the
/// right, which is exactly the RFC 6962 §2.1 split at the largest power of two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Invariant: `hashes.len() == size.count_ones()`.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the tree over `leaves` (leaf hashes).
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut f = Self::new();
        for leaf in leaves {
            f.push(*leaf);
        }
        f
    }

    /// Appends a leaf hash (a [`leaf_hash`], not the record itself).
    ///
    /// # Panics
    /// If the tree already has `u64::MAX` leaves.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut carry = self.size;
        while carry & 1 == 1 {
            let left = self
                .hashes
                .pop()
                .expect("a frontier holds one hash per set bit of its size");
            hash = node_hash(&left, &hash);
            carry >>= 1;
        }
        self.hashes.push(hash);
        self.size = self
            .size
            .checked_add(1)
            .expect("a Merkle tree holds at most u64::MAX leaves");
    }

    /// The number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees, leftmost (biggest) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The tree's root, equal to [`root`] over all the leaves pushed
    /// (RFC 6962 §2.1). At most 63 node hashes.
    pub fn root(&self) -> Hash {
        let mut edge = self.hashes.iter().rev();
        match edge.next() {
            None => EMPTY_ROOT,
            Some(last) => edge.fold(*last, |right, left| node_hash(left, &right)),
        }
    }

    /// The frontier as bytes: the size as 8 bytes big-endian, then the
    /// `size.count_ones()` hashes, leftmost first.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.hashes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    /// Reads what [`Frontier::serialize`] wrote; refuses any other length.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, FrontierError> {
        let Some((size_bytes, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(FrontierError::TooShort { got: bytes.len() });
        };
        let size = u64::from_be_bytes(*size_bytes);
        let count = size.count_ones() as usize;
        if rest.len() != 32 * count {
            return Err(FrontierError::Length {
                size,
                hashes: count,
                expected: 8 + 32 * count,
                got: bytes.len(),
            });
        }
        let hashes = rest
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Ok(Frontier { size, hashes })
    }
}

/// The audit path `PATH(index, D[n])` of a leaf (RFC 6962 §2.1.1,
/// RFC 9162 §2.1.3.1): the sibling subtree roots from the leaf up to the root.
/// `leaves` are all the leaf hashes of the tree of size `n = leaves.len()`.
///
/// Costs O(n) node hashes (the siblings cover disjoint ranges of the leaves),
/// i.e. about n node hashes for a tree of n leaves; returns O(log n) hashes.
///
/// # Panics
/// If `index >= leaves.len()`; see [`try_inclusion_proof`].
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    match try_inclusion_proof(leaves, index) {
        Ok(proof) => proof,
        Err(e) => panic!("inclusion_proof: {e}"),
    }
}

/// [`inclusion_proof`], with [`ProofError::IndexOutOfRange`] instead of a panic.
pub fn try_inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::with_capacity(inclusion_proof_len(index, size));
    // Walk down from the root, keeping the subtree [lo, hi) that holds the
    // leaf; the siblings are found top-down and the path lists them bottom-up.
    let (mut lo, mut hi, mut m) = (0usize, leaves.len(), index as usize);
    while hi - lo > 1 {
        let k = split((hi - lo) as u64) as usize;
        if m < k {
            proof.push(subtree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            proof.push(subtree_root(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The number of hashes in the audit path of leaf `index` in a tree of `size`
/// (`index < size`).
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (mut m, mut n, mut len) = (index, size, 0);
    while n > 1 {
        let k = split(n);
        if m < k {
            n = k;
        } else {
            m -= k;
            n -= k;
        }
        len += 1;
    }
    len
}

/// Checks that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves
/// whose root is `root`, following RFC 9162 §2.1.3.2.
///
/// The proof must have exactly the length the index and size call for. Note
/// that, as in the RFC, the size is bound only through the root: a proof may
/// also verify for another size whose tree has the same shape along the path,
/// so the root and size must come together from one signed tree head.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf, index, size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// RFC 9162 §2.1.3.2, steps 1 to 4: the root the proof leads to.
fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    let wrong_length = || ProofError::InclusionProofLength {
        index,
        size,
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length());
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(wrong_length());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length());
    }
    Ok(r)
}

/// The consistency proof `PROOF(old_size, D[n])` (RFC 6962 §2.1.2,
/// RFC 9162 §2.1.4.1) that the tree of the first `old_size` leaves is a prefix
/// of the tree over `leaves` (all the leaf hashes of the new tree). Empty when
/// `old_size` is 0 or equals `n`.
///
/// Costs O(n) node hashes (the proof's subtrees cover disjoint ranges of the
/// leaves); returns O(log n) hashes.
///
/// # Panics
/// If `old_size > leaves.len()`; see [`try_consistency_proof`].
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Vec<Hash> {
    match try_consistency_proof(leaves, old_size) {
        Ok(proof) => proof,
        Err(e) => panic!("consistency_proof: {e}"),
    }
}

/// [`consistency_proof`], with [`ProofError::OldSizeExceedsNewSize`] instead of a panic.
pub fn try_consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new_size = leaves.len() as u64;
    if old_size > new_size {
        return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
    }
    let mut proof = Vec::with_capacity(consistency_proof_len(old_size, new_size));
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    // SUBPROOF(m, D[lo:hi], whole), unrolled: hashes are found top-down and
    // the proof lists them bottom-up.
    let (mut lo, mut hi, mut m, mut whole) = (0usize, leaves.len(), old_size as usize, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                proof.push(subtree_root(&leaves[lo..hi]));
            }
            break;
        }
        let k = split(n as u64) as usize;
        if m <= k {
            proof.push(subtree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            proof.push(subtree_root(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The number of hashes in the consistency proof from `old_size` to
/// `new_size` (`old_size <= new_size`).
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size == new_size {
        return 0;
    }
    let (mut m, mut n, mut whole, mut len) = (old_size, new_size, true, 0);
    while m != n {
        let k = split(n);
        if m <= k {
            n = k;
        } else {
            m -= k;
            n -= k;
            whole = false;
        }
        len += 1;
    }
    if whole {
        len
    } else {
        len + 1
    }
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix
/// of the tree of `new_size` leaves with root `new_root`, following
/// RFC 9162 §2.1.4.2.
///
/// Edge cases the RFC leaves open, handled as in transparency-dev/merkle: the
/// proof must be empty when `old_size` is 0 (then `old_root` must be
/// [`EMPTY_ROOT`]) or equals `new_size` (then the roots must be equal).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ProofError::ConsistencyProofLength {
            old_size,
            new_size,
            expected,
            got: proof.len(),
        });
    }
    if old_size == 0 {
        if *old_root != EMPTY_ROOT {
            return Err(ProofError::OldRootMismatch {
                computed: EMPTY_ROOT,
                expected: *old_root,
            });
        }
        return Ok(());
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(ProofError::SameSizeRootsDiffer {
                size: old_size,
                old_root: *old_root,
                new_root: *new_root,
            });
        }
        return Ok(());
    }
    let (fr, sr) = roots_from_consistency_proof(old_size, new_size, old_root, proof)?;
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2, steps 1 to 6, for `0 < old_size < new_size`: the old
/// and new roots the proof leads to.
fn roots_from_consistency_proof(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    proof: &[Hash],
) -> Result<(Hash, Hash), ProofError> {
    let wrong_length = || ProofError::ConsistencyProofLength {
        old_size,
        new_size,
        expected: consistency_proof_len(old_size, new_size),
        got: proof.len(),
    };
    // Step 2: when the old tree is a perfect subtree of the new one, its root
    // is the first node of the path.
    let mut path = old_size
        .is_power_of_two()
        .then_some(old_root)
        .into_iter()
        .chain(proof);
    // Step 1: an empty path fails.
    let first = path.next().ok_or_else(wrong_length)?;
    // Steps 3 and 4.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (*first, *first);
    // Step 6.
    for c in path {
        if snode == 0 {
            return Err(wrong_length());
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7 (the part about sizes; the caller compares the roots).
    if snode != 0 {
        return Err(wrong_length());
    }
    Ok((fr, sr))
}

/// A hash as 64 lowercase hex digits.
pub fn to_hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// A hash from exactly 64 hex digits (either case).
pub fn from_hex(s: &str) -> Result<Hash, HexError> {
    let count = s.chars().count();
    if s.len() != 64 || count != 64 {
        return Err(HexError::Length { got: count });
    }
    let mut out = [0u8; 32];
    for (position, found) in s.chars().enumerate() {
        let digit = found
            .to_digit(16)
            .ok_or(HexError::Digit { position, found })? as u8;
        out[position / 2] |= if position % 2 == 0 { digit << 4 } else { digit };
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference implementations, written straight from RFC 6962 §2.1 over the
    /// raw leaf data, with their own concatenation: independent of the code
    /// above except for SHA-256.
    fn h_node_ref(l: &Hash, r: &Hash) -> Hash {
        sha256(&[&[1u8][..], &l[..], &r[..]].concat())
    }

    fn split_ref(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn mth_ref(d: &[Hash]) -> Hash {
        match d.len() {
            0 => sha256(b""),
            1 => d[0],
            n => {
                let k = split_ref(n);
                h_node_ref(&mth_ref(&d[..k]), &mth_ref(&d[k..]))
            }
        }
    }

    fn path_ref(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_ref(n);
        if m < k {
            let mut p = path_ref(m, &d[..k]);
            p.push(mth_ref(&d[k..]));
            p
        } else {
            let mut p = path_ref(m - k, &d[k..]);
            p.push(mth_ref(&d[..k]));
            p
        }
    }

    fn subproof_ref(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth_ref(d)] };
        }
        let k = split_ref(n);
        if m <= k {
            let mut p = subproof_ref(m, &d[..k], b);
            p.push(mth_ref(&d[k..]));
            p
        } else {
            let mut p = subproof_ref(m - k, &d[k..], false);
            p.push(mth_ref(&d[..k]));
            p
        }
    }

    fn proof_ref(m: usize, d: &[Hash]) -> Vec<Hash> {
        if m == 0 || m == d.len() {
            vec![]
        } else {
            subproof_ref(m, d, true)
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        leaves_seeded(n, 0)
    }

    fn leaves_seeded(n: usize, seed: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("journal record {seed}/{i}").as_bytes()))
            .collect()
    }

    fn hx(s: &str) -> Hash {
        from_hex(s).unwrap()
    }

    fn flip(h: &Hash, bit: usize) -> Hash {
        let mut out = *h;
        out[(bit / 8) % 32] ^= 1 << (bit % 8);
        out
    }

    /// The leaf data of the RFC 6962 / transparency-dev reference tree.
    fn rfc_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    /// Roots of the first 0..=8 reference leaves (transparency-dev/merkle
    /// testonly; the same vectors as google/certificate-transparency).
    const RFC_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn hashing_known_answers() {
        assert_eq!(EMPTY_ROOT, sha256(b""));
        assert_eq!(
            to_hex(&root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(leaf_hash(b""), sha256(&[0x00]));
        assert_eq!(leaf_hash(b"abc"), sha256(b"\x00abc"));
        let (a, b) = ([7u8; 32], [9u8; 32]);
        assert_eq!(node_hash(&a, &b), h_node_ref(&a, &b));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        // A node cannot pass for a leaf over the same bytes.
        assert_ne!(node_hash(&a, &b), leaf_hash(&[a, b].concat()));
    }

    #[test]
    fn one_leaf_root_is_the_leaf_hash() {
        let l = leaf_hash(b"only");
        assert_eq!(root(&[l]), l);
        assert_eq!(Frontier::from_leaves(&[l]).root(), l);
        assert!(inclusion_proof(&[l], 0).is_empty());
        verify_inclusion(&l, 0, 1, &[], &l).unwrap();
    }

    #[test]
    fn hand_computed_small_trees() {
        let l = rfc_leaves();
        let n = node_hash;
        let n01 = n(&l[0], &l[1]);
        let n23 = n(&l[2], &l[3]);
        let n45 = n(&l[4], &l[5]);
        let cases: [(usize, Hash); 4] = [
            (2, n01),
            (3, n(&n01, &l[2])),
            (5, n(&n(&n01, &n23), &l[4])),
            (7, n(&n(&n01, &n23), &n(&n45, &l[6]))),
        ];
        for (size, want) in cases {
            assert_eq!(root(&l[..size]), want, "size {size}");
            assert_eq!(
                Frontier::from_leaves(&l[..size]).root(),
                want,
                "size {size}"
            );
            assert_eq!(to_hex(&want), RFC_ROOTS[size], "size {size}");
        }
        for (size, want) in RFC_ROOTS.iter().enumerate() {
            assert_eq!(to_hex(&root(&l[..size])), *want, "size {size}");
        }
    }

    #[test]
    fn reference_proofs() {
        // transparency-dev/merkle proof/verify_test.go.
        let l = rfc_leaves();
        let inclusion = inclusion_proof(&l, 0);
        let want = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(inclusion.iter().map(to_hex).collect::<Vec<_>>(), want);
        let consistency: [(usize, usize, &[&str]); 4] = [
            (1, 1, &[]),
            (1, 8, &want),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in consistency {
            let proof = consistency_proof(&l[..new], old as u64);
            assert_eq!(proof.iter().map(to_hex).collect::<Vec<_>>(), want);
            verify_consistency(
                old as u64,
                new as u64,
                &hx(RFC_ROOTS[old]),
                &hx(RFC_ROOTS[new]),
                &proof,
            )
            .unwrap();
        }
    }

    #[test]
    fn frontier_matches_root_and_round_trips() {
        let all = leaves(300);
        let mut f = Frontier::new();
        for size in 0..=300usize {
            if size > 0 {
                f.push(all[size - 1]);
            }
            assert_eq!(f.size(), size as u64);
            assert_eq!(f.hashes().len(), size.count_ones() as usize);
            let want = mth_ref(&all[..size]);
            assert_eq!(f.root(), want, "size {size}");
            assert_eq!(root(&all[..size]), want, "size {size}");
            assert_eq!(subtree_root(&all[..size]), want, "size {size}");
            let bytes = f.serialize();
            assert_eq!(bytes.len(), 8 + 32 * size.count_ones() as usize);
            let back = Frontier::deserialize(&bytes).unwrap();
            assert_eq!(back, f);
            assert_eq!(back.root(), want);
            // A restored frontier keeps growing like the original.
            let mut grown = back;
            grown.push(all[size % 300]);
            let mut expected = all[..size].to_vec();
            expected.push(all[size % 300]);
            assert_eq!(grown.root(), mth_ref(&expected));
        }
    }

    #[test]
    fn frontier_deserialize_refuses_bad_lengths() {
        assert_eq!(
            Frontier::deserialize(&[0; 7]),
            Err(FrontierError::TooShort { got: 7 })
        );
        assert_eq!(Frontier::deserialize(&[0; 8]), Ok(Frontier::new()));
        let f = Frontier::from_leaves(&leaves(5)); // two hashes
        let bytes = f.serialize();
        let short = Frontier::deserialize(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(
            short,
            FrontierError::Length {
                size: 5,
                hashes: 2,
                expected: 72,
                got: 71
            }
        );
        assert!(short.to_string().contains("size 5"), "{short}");
        let mut long = bytes.clone();
        long.push(0);
        assert!(Frontier::deserialize(&long).is_err());
        let mut wrong_size = bytes;
        wrong_size[7] = 7; // three set bits, two hashes
        assert!(Frontier::deserialize(&wrong_size).is_err());
    }

    /// Whether the RFC 9162 inclusion algorithm combines hashes in exactly the
    /// same way for (index, a) and (index, b): then no proof can tell the two
    /// sizes apart, and only the (signed) root binds the size.
    fn same_inclusion_shape(index: u64, a: u64, b: u64) -> bool {
        let len = inclusion_proof_len(index, a);
        if index >= b || len != inclusion_proof_len(index, b) {
            return false;
        }
        let probe = leaves_seeded(len + 1, 99);
        root_from_inclusion_proof(&probe[0], index, a, &probe[1..])
            == root_from_inclusion_proof(&probe[0], index, b, &probe[1..])
    }

    #[test]
    fn inclusion_proofs_exhaustive_up_to_64() {
        let all = leaves(65);
        for size in 1..=64usize {
            let tree = &all[..size];
            let r = root(tree);
            let s = size as u64;
            for index in 0..size {
                let i = index as u64;
                let leaf = &tree[index];
                let proof = inclusion_proof(tree, i);
                assert_eq!(proof, path_ref(index, tree), "size {size} index {index}");
                assert_eq!(proof.len(), inclusion_proof_len(i, s));
                verify_inclusion(leaf, i, s, &proof, &r).unwrap();

                // Any proof hash altered.
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k] = flip(&bad[k], k);
                    assert!(matches!(
                        verify_inclusion(leaf, i, s, &bad, &r),
                        Err(ProofError::RootMismatch { .. })
                    ));
                }
                // A hash missing or one too many.
                if !proof.is_empty() {
                    assert!(matches!(
                        verify_inclusion(leaf, i, s, &proof[1..], &r),
                        Err(ProofError::InclusionProofLength { .. })
                    ));
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(matches!(
                    verify_inclusion(leaf, i, s, &longer, &r),
                    Err(ProofError::InclusionProofLength { .. })
                ));
                // Every other index, and indices out of range.
                for other in 0..size as u64 + 2 {
                    if other != i {
                        assert!(verify_inclusion(leaf, other, s, &proof, &r).is_err());
                    }
                }
                assert_eq!(
                    verify_inclusion(leaf, s, s, &proof, &r),
                    Err(ProofError::IndexOutOfRange { index: s, size: s })
                );
                // Other sizes: refused, unless the tree has the same shape
                // along the path (then only the root binds the size).
                for other in 0..=66u64 {
                    if other != s && verify_inclusion(leaf, i, other, &proof, &r).is_ok() {
                        assert!(same_inclusion_shape(i, s, other), "{size} {index} {other}");
                    }
                }
                // Another leaf, an altered leaf, an altered root.
                assert!(verify_inclusion(&all[64], i, s, &proof, &r).is_err());
                assert!(verify_inclusion(&flip(leaf, 3), i, s, &proof, &r).is_err());
                for bit in [0, 77, 255] {
                    let err = verify_inclusion(leaf, i, s, &proof, &flip(&r, bit)).unwrap_err();
                    assert_eq!(
                        err,
                        ProofError::RootMismatch {
                            computed: r,
                            expected: flip(&r, bit)
                        }
                    );
                }
                // The root of the tree one leaf bigger, with its own proof.
                let bigger = &all[..size + 1];
                assert!(verify_inclusion(leaf, i, s, &proof, &root(bigger)).is_err());
                verify_inclusion(leaf, i, s + 1, &inclusion_proof(bigger, i), &root(bigger))
                    .unwrap();
            }
        }
    }

    #[test]
    fn inclusion_proof_index_out_of_range() {
        let tree = leaves(3);
        assert_eq!(
            try_inclusion_proof(&tree, 3),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert!(try_inclusion_proof(&[], 0).is_err());
        assert!(verify_inclusion(&tree[0], 0, 0, &[], &EMPTY_ROOT).is_err());
        let caught = std::panic::catch_unwind(|| inclusion_proof(&tree, 5));
        assert!(caught.is_err());
    }

    /// Like [`same_inclusion_shape`], for consistency proofs.
    fn same_consistency_shape(a: (u64, u64), b: (u64, u64)) -> bool {
        let len = consistency_proof_len(a.0, a.1);
        if b.0 == 0 || b.0 >= b.1 || len != consistency_proof_len(b.0, b.1) {
            return false;
        }
        let probe = leaves_seeded(len + 1, 98);
        roots_from_consistency_proof(a.0, a.1, &probe[0], &probe[1..])
            == roots_from_consistency_proof(b.0, b.1, &probe[0], &probe[1..])
    }

    #[test]
    fn consistency_proofs_exhaustive_up_to_40() {
        let all = leaves(41);
        let roots: Vec<Hash> = (0..=41).map(|n| root(&all[..n])).collect();
        for new in 0..=40usize {
            let tree = &all[..new];
            let new_root = roots[new];
            let n = new as u64;
            for old in 0..=new {
                let o = old as u64;
                let old_root = roots[old];
                let proof = consistency_proof(tree, o);
                assert_eq!(proof, proof_ref(old, tree), "{old} -> {new}");
                assert_eq!(proof.len(), consistency_proof_len(o, n));
                verify_consistency(o, n, &old_root, &new_root, &proof).unwrap();

                // Any proof hash altered.
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k] = flip(&bad[k], 5 * k);
                    assert!(
                        verify_consistency(o, n, &old_root, &new_root, &bad).is_err(),
                        "{old} -> {new}, hash {k}"
                    );
                }
                // A hash missing or one too many.
                if !proof.is_empty() {
                    assert!(matches!(
                        verify_consistency(o, n, &old_root, &new_root, &proof[1..]),
                        Err(ProofError::ConsistencyProofLength { .. })
                    ));
                }
                let mut longer = proof.clone();
                longer.push(old_root);
                assert!(matches!(
                    verify_consistency(o, n, &old_root, &new_root, &longer),
                    Err(ProofError::ConsistencyProofLength { .. })
                ));
                // Altered roots.
                assert!(verify_consistency(o, n, &flip(&old_root, 1), &new_root, &proof).is_err());
                // (The empty tree is a prefix of every tree, whatever its root.)
                if old > 0 {
                    assert!(
                        verify_consistency(o, n, &old_root, &flip(&new_root, 2), &proof).is_err()
                    );
                }
                if old > 0 && old < new {
                    // A new tree that differs in one appended leaf, or in
                    // one leaf the old tree already had.
                    for at in [new - 1, 0] {
                        let mut forked = tree.to_vec();
                        forked[at] = flip(&forked[at], 9);
                        let forked_root = root(&forked);
                        assert!(verify_consistency(o, n, &old_root, &forked_root, &proof).is_err());
                        // The fork's own proof works only if the old tree is
                        // still its prefix.
                        let forked_proof = consistency_proof(&forked, o);
                        let forked_ok =
                            verify_consistency(o, n, &old_root, &forked_root, &forked_proof);
                        assert_eq!(forked_ok.is_ok(), at >= old, "{old} -> {new}, fork at {at}");
                    }
                    // An old tree that is not a prefix.
                    let mut other_old = tree[..old].to_vec();
                    other_old[0] = flip(&other_old[0], 4);
                    let other_root = root(&other_old);
                    assert!(verify_consistency(o, n, &other_root, &new_root, &proof).is_err());
                }
                // Other sizes, with the roots of those sizes or the same
                // roots: refused unless indistinguishable by construction.
                for (oo, nn) in [
                    (o + 1, n),
                    (o.wrapping_sub(1), n),
                    (o, n + 1),
                    (o, n.wrapping_sub(1)),
                    (o + 1, n + 1),
                ] {
                    if oo > 41 || nn > 41 || (oo, nn) == (o, n) {
                        continue;
                    }
                    let with_their_roots = verify_consistency(
                        oo,
                        nn,
                        &roots[oo as usize],
                        &roots[nn as usize],
                        &proof,
                    );
                    let with_these_roots = verify_consistency(oo, nn, &old_root, &new_root, &proof);
                    for result in [with_their_roots, with_these_roots] {
                        if result.is_ok() {
                            // Only possible for a proof that is empty on both sides
                            // (old size 0, or equal sizes with equal roots), or
                            // for the same computation.
                            assert!(
                                proof.is_empty() || same_consistency_shape((o, n), (oo, nn)),
                                "{old} -> {new} accepted as {oo} -> {nn}"
                            );
                        }
                    }
                }
            }
            // A bigger old tree is refused.
            assert_eq!(
                verify_consistency(n + 1, n, &roots[new + 1], &new_root, &[]),
                Err(ProofError::OldSizeExceedsNewSize {
                    old_size: n + 1,
                    new_size: n
                })
            );
            assert!(try_consistency_proof(tree, n + 1).is_err());
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let tree = leaves(5);
        let r5 = root(&tree);
        // From the empty tree: empty proof, and the old root must be SHA-256("").
        verify_consistency(0, 5, &EMPTY_ROOT, &r5, &[]).unwrap();
        assert!(matches!(
            verify_consistency(0, 5, &r5, &r5, &[]),
            Err(ProofError::OldRootMismatch { .. })
        ));
        // Same size: empty proof, equal roots.
        verify_consistency(5, 5, &r5, &r5, &[]).unwrap();
        let err = verify_consistency(5, 5, &r5, &EMPTY_ROOT, &[]).unwrap_err();
        assert!(matches!(
            err,
            ProofError::SameSizeRootsDiffer { size: 5, .. }
        ));
        assert!(err.to_string().contains(&to_hex(&r5)), "{err}");
        // A non-empty proof where none is due.
        assert!(matches!(
            verify_consistency(5, 5, &r5, &r5, &[r5]),
            Err(ProofError::ConsistencyProofLength {
                expected: 0,
                got: 1,
                ..
            })
        ));
        let caught = std::panic::catch_unwind(|| consistency_proof(&tree, 6));
        assert!(caught.is_err());
    }

    #[test]
    fn error_messages_say_what_did_not_match() {
        let tree = leaves(7);
        let r = root(&tree);
        let proof = inclusion_proof(&tree, 2);
        let wrong = flip(&r, 0);
        let msg = verify_inclusion(&tree[2], 2, 7, &proof, &wrong)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&to_hex(&r)) && msg.contains(&to_hex(&wrong)),
            "{msg}"
        );
        let msg = verify_inclusion(&tree[2], 2, 7, &proof[1..], &r)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "wrong inclusion proof length for leaf 2 in a tree of size 7: expected 3 hashes, got 2"
        );
        let msg = verify_inclusion(&tree[2], 9, 7, &proof, &r)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "leaf index 9 is out of range for a tree of size 7");
        let old = root(&tree[..3]);
        let cproof = consistency_proof(&tree, 3);
        let msg = verify_consistency(3, 7, &wrong, &r, &cproof)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("old root mismatch") && msg.contains(&to_hex(&old)),
            "{msg}"
        );
        let msg = verify_consistency(3, 7, &old, &wrong, &cproof)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("new root mismatch") && msg.contains(&to_hex(&r)),
            "{msg}"
        );
        let msg = verify_consistency(8, 7, &old, &r, &cproof)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "old tree size 8 is greater than new tree size 7");
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = leaf_hash(b"x");
        assert_eq!(from_hex(&to_hex(&h)), Ok(h));
        assert_eq!(from_hex(&to_hex(&h).to_uppercase()), Ok(h));
        assert_eq!(to_hex(&[0xab; 32]), "ab".repeat(32));
        assert_eq!(from_hex("ab"), Err(HexError::Length { got: 2 }));
        assert_eq!(from_hex(&"a".repeat(65)), Err(HexError::Length { got: 65 }));
        let mut bad = "0".repeat(64);
        bad.replace_range(10..11, "g");
        assert_eq!(
            from_hex(&bad),
            Err(HexError::Digit {
                position: 10,
                found: 'g'
            })
        );
        // Multi-byte characters are counted as characters, never split.
        let wide = format!("é{}", "0".repeat(63));
        assert_eq!(from_hex(&wide), Err(HexError::Length { got: 64 }));
        assert!(from_hex(&format!("+{}", "0".repeat(63))).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_trees_up_to_2000(
            (size, index, old) in (1usize..=2000).prop_flat_map(|n| (Just(n), 0..n, 0..=n)),
            seed in any::<u64>(),
            pick in any::<usize>(),
        ) {
            let tree = leaves_seeded(size, seed);
            let s = size as u64;
            let r = mth_ref(&tree);
            prop_assert_eq!(root(&tree), r);
            prop_assert_eq!(Frontier::from_leaves(&tree).root(), r);
            let f = Frontier::from_leaves(&tree[..old]);
            prop_assert_eq!(Frontier::deserialize(&f.serialize()).unwrap().root(), root(&tree[..old]));

            // Inclusion.
            let i = index as u64;
            let proof = inclusion_proof(&tree, i);
            prop_assert_eq!(&proof, &path_ref(index, &tree));
            prop_assert!(verify_inclusion(&tree[index], i, s, &proof, &r).is_ok());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = pick % bad.len();
                bad[k] = flip(&bad[k], pick);
                prop_assert!(verify_inclusion(&tree[index], i, s, &bad, &r).is_err());
            }
            let other = (index + 1 + pick % size.max(2)) % size;
            if other != index {
                prop_assert!(verify_inclusion(&tree[index], other as u64, s, &proof, &r).is_err());
                prop_assert!(verify_inclusion(&tree[other], i, s, &proof, &r).is_err());
            }
            prop_assert!(verify_inclusion(&tree[index], i, s, &proof, &flip(&r, pick)).is_err());

            // Consistency.
            let o = old as u64;
            let old_root = root(&tree[..old]);
            let cproof = consistency_proof(&tree, o);
            prop_assert_eq!(&cproof, &proof_ref(old, &tree));
            prop_assert!(verify_consistency(o, s, &old_root, &r, &cproof).is_ok());
            if !cproof.is_empty() {
                let mut bad = cproof.clone();
                let k = pick % bad.len();
                bad[k] = flip(&bad[k], pick);
                prop_assert!(verify_consistency(o, s, &old_root, &r, &bad).is_err());
                prop_assert!(verify_consistency(o, s, &flip(&old_root, pick), &r, &cproof).is_err());
                prop_assert!(verify_consistency(o, s, &old_root, &flip(&r, pick), &cproof).is_err());
            }
        }
    }
}

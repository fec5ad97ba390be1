//! Unit tests of `merkle`.

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
            verify_inclusion(leaf, i, s + 1, &inclusion_proof(bigger, i), &root(bigger)).unwrap();
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
                assert!(verify_consistency(o, n, &old_root, &flip(&new_root, 2), &proof).is_err());
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
                let with_their_roots =
                    verify_consistency(oo, nn, &roots[oo as usize], &roots[nn as usize], &proof);
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

//! Tahoe's Merkle hash trees (`allmydata/hashtree.py`).
//!
//! A tree over `L` leaves is padded to `P = next_power_of_two(L)` leaves (at least 1) with
//! [`empty_leaf_hash`]`(j)` for leaf number `j`, and flattened breadth-first: node 0 is the root,
//! the children of `i` are `2i+1` and `2i+2`, and leaf `j` is node `P-1+j`. A single leaf is its
//! own root. Internal nodes are [`internal_node_hash`].
//!
//! Verification is chain-based: a leaf is proven by the siblings of its path to a trusted root,
//! and [`verify_leaf`] never trusts a hash it has not connected to that root.

use super::hash::{empty_leaf_hash, internal_node_hash, Hash};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// A hash that did not connect to the trusted root.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HashTreeError {
    #[error("hash tree: leaf {leaf} of {leaves} is out of range")]
    LeafOutOfRange { leaf: usize, leaves: usize },
    #[error("hash tree: node {0} needed to verify the leaf is missing")]
    MissingNode(usize),
    #[error("hash tree: leaf {0} does not match the root")]
    Mismatch(usize),
    #[error("hash tree: a stored tree has {got} nodes, expected {expected}")]
    BadTreeSize { got: usize, expected: usize },
}

/// The number of padded leaves of a tree over `leaves` leaves.
pub fn padded_leaves(leaves: usize) -> usize {
    leaves.max(1).next_power_of_two()
}

/// The number of nodes of the flattened tree: `2P-1`.
pub fn tree_size(leaves: usize) -> usize {
    2 * padded_leaves(leaves) - 1
}

/// Builds the full flattened tree over `leaves`.
pub fn build(leaves: &[Hash]) -> Vec<Hash> {
    let p = padded_leaves(leaves.len());
    let mut nodes = vec![[0u8; 32]; 2 * p - 1];
    for j in 0..p {
        nodes[p - 1 + j] = match leaves.get(j) {
            Some(h) => *h,
            None => empty_leaf_hash(j),
        };
    }
    for i in (0..p - 1).rev() {
        nodes[i] = internal_node_hash(&nodes[2 * i + 1], &nodes[2 * i + 2]);
    }
    nodes
}

/// The root of the tree over `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    build(leaves)[0]
}

fn sibling(i: usize) -> usize {
    if i % 2 == 1 {
        i + 1
    } else {
        i - 1
    }
}

/// Node indexes needed to verify leaf `leaf` against the root: the sibling of every node on the
/// path, and with `include_leaf` the leaf itself. The root is never included.
pub fn needed_hashes(leaves: usize, leaf: usize, include_leaf: bool) -> BTreeSet<usize> {
    let p = padded_leaves(leaves);
    let mut i = p - 1 + leaf;
    let mut out = BTreeSet::new();
    if include_leaf && i != 0 {
        out.insert(i);
    }
    while i != 0 {
        out.insert(sibling(i));
        i = (i - 1) / 2;
    }
    out
}

/// Checks that `leaf_hash` is leaf `leaf` of a tree over `leaves` leaves with root `root`, using
/// the sibling hashes in `chain` (node index to hash; extra entries are ignored).
pub fn verify_leaf(
    root: &Hash,
    leaves: usize,
    leaf: usize,
    leaf_hash: &Hash,
    chain: &BTreeMap<usize, Hash>,
) -> Result<(), HashTreeError> {
    let p = padded_leaves(leaves);
    if leaf >= p {
        return Err(HashTreeError::LeafOutOfRange { leaf, leaves });
    }
    let mut i = p - 1 + leaf;
    let mut h = *leaf_hash;
    while i != 0 {
        let s = sibling(i);
        let sh = chain.get(&s).ok_or(HashTreeError::MissingNode(s))?;
        h = if i % 2 == 1 {
            internal_node_hash(&h, sh)
        } else {
            internal_node_hash(sh, &h)
        };
        i = (i - 1) / 2;
    }
    if &h == root {
        Ok(())
    } else {
        Err(HashTreeError::Mismatch(leaf))
    }
}

/// Checks a whole stored tree (as flattened by [`build`]) against a trusted root and returns its
/// leaf row. Every internal node is recomputed, so the stored interior is never trusted.
pub fn verify_full_tree(
    root: &Hash,
    leaves: usize,
    nodes: &[Hash],
) -> Result<Vec<Hash>, HashTreeError> {
    let p = padded_leaves(leaves);
    if nodes.len() != 2 * p - 1 {
        return Err(HashTreeError::BadTreeSize {
            got: nodes.len(),
            expected: 2 * p - 1,
        });
    }
    let leaf_row = &nodes[p - 1..];
    let rebuilt = build(&leaf_row[..leaves]);
    if &rebuilt[0] != root || rebuilt[p - 1..] != *leaf_row {
        return Err(HashTreeError::Mismatch(0));
    }
    Ok(leaf_row[..leaves].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::tagged_hash;

    fn leaf(i: usize) -> Hash {
        tagged_hash(b"test", &i.to_le_bytes())
    }

    #[test]
    fn shapes() {
        assert_eq!(tree_size(0), 1);
        assert_eq!(tree_size(1), 1);
        assert_eq!(tree_size(2), 3);
        assert_eq!(tree_size(3), 7);
        assert_eq!(tree_size(10), 31);
        assert_eq!(build(&[]), vec![empty_leaf_hash(0)]);
        assert_eq!(build(&[leaf(0)]), vec![leaf(0)]);
        let t = build(&[leaf(0), leaf(1), leaf(2)]);
        assert_eq!(t[6], empty_leaf_hash(3));
        assert_eq!(t[0], internal_node_hash(&t[1], &t[2]));
    }

    #[test]
    fn needed_hashes_matches_tahoe() {
        // Tahoe: N=10 share 0 with the leaf -> {15, 16, 8, 4, 2}.
        let n = needed_hashes(10, 0, true);
        assert_eq!(n.into_iter().collect::<Vec<_>>(), vec![2, 4, 8, 15, 16]);
        // N=5 share 4 -> set([1, 11, 12, 6]).
        let n = needed_hashes(5, 4, true);
        assert_eq!(n.into_iter().collect::<Vec<_>>(), vec![1, 6, 11, 12]);
        assert!(needed_hashes(1, 0, true).is_empty());
    }

    #[test]
    fn verify_chain_and_reject_tampering() {
        for count in [1usize, 2, 3, 5, 8, 13] {
            let leaves: Vec<Hash> = (0..count).map(leaf).collect();
            let tree = build(&leaves);
            for (l, leaf_hash) in leaves.iter().enumerate() {
                let chain: BTreeMap<usize, Hash> = needed_hashes(count, l, false)
                    .into_iter()
                    .map(|i| (i, tree[i]))
                    .collect();
                verify_leaf(&tree[0], count, l, leaf_hash, &chain).unwrap();
                let mut bad = *leaf_hash;
                bad[0] ^= 1;
                assert_eq!(
                    verify_leaf(&tree[0], count, l, &bad, &chain),
                    Err(HashTreeError::Mismatch(l))
                );
                if let Some((&k, _)) = chain.iter().next() {
                    let mut c2 = chain.clone();
                    c2.get_mut(&k).unwrap()[3] ^= 1;
                    assert!(verify_leaf(&tree[0], count, l, leaf_hash, &c2).is_err());
                }
            }
            assert_eq!(verify_full_tree(&tree[0], count, &tree).unwrap(), leaves);
            let mut t2 = tree.clone();
            let last = t2.len() - 1;
            t2[last][0] ^= 1;
            assert!(verify_full_tree(&tree[0], count, &t2).is_err());
        }
    }
}

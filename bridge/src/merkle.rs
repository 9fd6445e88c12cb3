//! The Merkle tree of the archive log, as RFC 6962 / RFC 9162 define it.
//!
//! Leaf hash `SHA-256(0x00 || leaf)`, node hash `SHA-256(0x01 || left || right)`, the root of
//! an empty tree `SHA-256("")`; the tree over `n` leaves splits at the largest power of two
//! below `n`. Inclusion proofs (`PATH`) and consistency proofs (`PROOF`) are generated and
//! verified with the RFC's algorithms, so any RFC 6962 tool can check what the bridge hands out.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// `MTH(D[n])`: the root over the given leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut peaks = Peaks::default();
    for leaf in leaves {
        peaks.push(*leaf);
    }
    peaks.root()
}

/// The tree as a list of perfect subtrees ("peaks"): appending is O(log n) and the root of
/// the current size is O(log n), so a verifier can walk the log once and get the root at
/// every signed size.
#[derive(Debug, Clone, Default)]
pub struct Peaks {
    /// (height, hash), left to right; heights strictly decrease.
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl Peaks {
    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.stack.push((0, leaf));
        self.size += 1;
        while self.stack.len() >= 2 {
            let n = self.stack.len();
            if self.stack[n - 1].0 != self.stack[n - 2].0 {
                break;
            }
            let (height, right) = self.stack.pop().expect("two peaks");
            let (_, left) = self.stack.pop().expect("two peaks");
            self.stack.push((height + 1, node_hash(&left, &right)));
        }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root: the peaks folded from the right.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some((_, last)) = iter.next() else { return empty_root() };
        let mut acc = *last;
        for (_, peak) in iter {
            acc = node_hash(peak, &acc);
        }
        acc
    }
}

/// `PATH(index, D[n])`: the inclusion proof of leaf `index` in the tree over `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    assert!(index < leaves.len(), "leaf index out of range");
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    proof
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// `PROOF(m, D[n])`: the consistency proof between the first `m` leaves and all of `leaves`.
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Vec<Hash> {
    assert!(m <= leaves.len(), "old size beyond the tree");
    let mut proof = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut proof);
    }
    proof
}

fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !whole {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], whole, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Verifies an inclusion proof (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Verifies a consistency proof between a tree of `first` leaves with root `first_root` and
/// a tree of `second` leaves with root `second_root` (RFC 9162, 2.1.4.2).
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *first_root && sr == *second_root && s == 0
}

/// The tree over a list of leaves with every aligned perfect subtree's root kept, so that
/// the root of any prefix, an inclusion proof or a consistency proof costs O(log² n)
/// instead of O(n): what an export of many records from a large archive needs.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `levels[k][i]` is the root of leaves `i·2^k .. (i+1)·2^k`.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() >= 2) {
            let below = levels.last().expect("a level");
            let above: Vec<Hash> = below.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// The number of leaves.
    pub fn size(&self) -> usize {
        self.levels[0].len()
    }

    /// `MTH(D[a..b])` for `a` aligned to the largest power of two below `b - a` (as every
    /// range in `PATH` and `PROOF` is).
    fn range_root(&self, a: usize, b: usize) -> Hash {
        let n = b - a;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && a.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][a >> k];
        }
        let k = split(n);
        node_hash(&self.range_root(a, a + k), &self.range_root(a + k, b))
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: usize) -> Hash {
        self.range_root(0, size)
    }

    /// `PATH(index, D[0..size])`.
    pub fn inclusion_proof(&self, index: usize, size: usize) -> Vec<Hash> {
        assert!(index < size && size <= self.size(), "leaf index out of range");
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        out
    }

    fn path(&self, m: usize, a: usize, b: usize, out: &mut Vec<Hash>) {
        let n = b - a;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, a, a + k, out);
            out.push(self.range_root(a + k, b));
        } else {
            self.path(m - k, a + k, b, out);
            out.push(self.range_root(a, a + k));
        }
    }

    /// `PROOF(m, D[0..size])`.
    pub fn consistency_proof(&self, m: usize, size: usize) -> Vec<Hash> {
        assert!(m <= size && size <= self.size(), "sizes out of range");
        let mut out = Vec::new();
        if m > 0 && m < size {
            self.subproof(m, 0, size, true, &mut out);
        }
        out
    }

    fn subproof(&self, m: usize, a: usize, b: usize, whole: bool, out: &mut Vec<Hash>) {
        let n = b - a;
        if m == n {
            if !whole {
                out.push(self.range_root(a, b));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, a, a + k, whole, out);
            out.push(self.range_root(a + k, b));
        } else {
            self.subproof(m - k, a + k, b, false, out);
            out.push(self.range_root(a, a + k));
        }
    }
}

/// A hash as lower-case hex.
pub fn to_hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// A hash from hex; `None` unless exactly 32 bytes.
pub fn from_hex(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    /// The recursive definition, written out, to check the peaks against.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn known_vectors() {
        // RFC 6962 empty tree and single-leaf hashes (as in Certificate Transparency's tests).
        assert_eq!(to_hex(&empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(to_hex(&leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
        // The 8-leaf test tree of the CT reference implementation: leaves
        // "", 00, 10, 2021, 3031, 40414243, 5051525354555657, 606162636465666768696a6b6c6d6e6f.
        let data: Vec<Vec<u8>> =
            ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
                .iter()
                .map(|h| hex::decode(h).unwrap())
                .collect();
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(to_hex(&root(&hashes)), "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
        assert_eq!(to_hex(&root(&hashes[..3])), "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77");
    }

    #[test]
    fn peaks_equal_the_recursive_root() {
        for n in 0..70 {
            let d = leaves(n);
            assert_eq!(root(&d), mth(&d), "n = {n}");
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_reject() {
        for n in 1..40 {
            let d = leaves(n);
            let r = root(&d);
            for i in 0..n {
                let proof = inclusion_proof(&d, i);
                assert!(verify_inclusion(i as u64, n as u64, &d[i], &proof, &r), "n={n} i={i}");
                let other = leaf_hash(b"other");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &r), "n={n} i={i}");
                if n > 1 {
                    assert!(
                        !verify_inclusion(((i + 1) % n) as u64, n as u64, &d[i], &proof, &r) || d[i] == d[(i + 1) % n]
                    );
                }
            }
        }
    }

    #[test]
    fn the_cached_tree_gives_the_same_roots_and_proofs() {
        let d = leaves(70);
        let tree = Tree::new(d.clone());
        for n in 1..=70 {
            assert_eq!(tree.root(n), root(&d[..n]), "n = {n}");
            for i in (0..n).step_by(3) {
                assert_eq!(tree.inclusion_proof(i, n), inclusion_proof(&d[..n], i), "n = {n} i = {i}");
            }
            for m in (1..=n).step_by(5) {
                assert_eq!(tree.consistency_proof(m, n), consistency_proof(&d[..n], m), "m = {m} n = {n}");
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_reject() {
        for n in 1..40 {
            let d = leaves(n);
            let rn = root(&d);
            for m in 1..=n {
                let rm = root(&d[..m]);
                let proof = consistency_proof(&d, m);
                assert!(verify_consistency(m as u64, n as u64, &rm, &rn, &proof), "m={m} n={n}");
                if m < n {
                    let bad = leaf_hash(b"x");
                    assert!(!verify_consistency(m as u64, n as u64, &bad, &rn, &proof), "m={m} n={n}");
                    assert!(!verify_consistency(m as u64, n as u64, &rm, &bad, &proof), "m={m} n={n}");
                }
            }
        }
    }
}

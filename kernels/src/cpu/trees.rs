//! Tree ensembles on the CPU.
//!
//! Back of the envelope for 500 trees of depth 8 over 30 features: a row
//! takes 8 dependent steps per tree (load node, load feature, compare,
//! pick child); one row at a time that chain is latency-bound at ~4–5 ns
//! per step. Walking `LANES` rows of a block in lockstep makes their chains
//! independent, so the core overlaps them and the cost becomes the
//! instruction count, ~8 per step. Nodes are 8 bytes (perfect layout) or 16
//! (compact), so a 500 × depth-8 forest is ~1.5 MB and stays in L2 across
//! the row blocks.

use crate::model::{Link, Node, Tree, TreeEnsemble, ZERO_THRESHOLD};
use crate::reference::write_outputs;

/// Trees up to this depth may use the perfect layout (1023 internal nodes).
const PERFECT_DEPTH_MAX: usize = 10;
/// A tree uses the perfect layout only if padding grows it at most this much.
const PERFECT_PADDING_MAX: usize = 8;
/// Rows per block. The block holds each feature twice (see [`fill_block`]),
/// 2 × 30 × 96 × 4 bytes = 23 KiB for 30 features: it stays in L1 while
/// every tree walks it.
const BLOCK_ROWS: usize = 96;
/// Rows walked in lockstep through one tree: enough independent chains to
/// cover the ~16-cycle latency of a step, few enough to stay in registers
/// (measured best for both layouts among 4, 6, 8, 12 and 16).
const LANES: usize = 12;

/// Top levels of each tree evaluated for 16 rows at once with AVX-512.
/// (Measured: 5 levels cost more than they save, for both layouts.)
const HEAD_LEVELS: usize = 4;
const HEAD_NODES: usize = (1 << HEAD_LEVELS) - 1;
/// Rows are walked in multiples of the 16-row head and the lane group.
const WALK_MULTIPLE: usize = 48;
const _: () = assert!(WALK_MULTIPLE.is_multiple_of(16) && WALK_MULTIPLE.is_multiple_of(LANES));
const _: () = assert!(BLOCK_ROWS.is_multiple_of(WALK_MULTIPLE));

const MISSING_LEFT: u32 = 1 << 31;
const ZERO_IS_MISSING: u32 = 1 << 30;
const CATEGORICAL: u32 = 1 << 29;
const OFFSET_MASK: u32 = (1 << 28) - 1;

/// A perfect-layout node: children of `i` are `2i + 1` and `2i + 2`; go
/// left when `block[column] < threshold`. No flags: missing values are routed
/// by which copy of the feature `column` names (see [`fill_block`]).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct PerfectNode {
    threshold: f32,
    /// Offset of the node's feature copy in the block: `column * BLOCK_ROWS`.
    column: u32,
}

/// A compact-layout node: go to `left` when `block[column] < threshold`, else
/// to `left + 1` (the importers store trees breadth-first, so siblings are
/// adjacent). A leaf has threshold -inf and `left` one below itself, so it
/// steps to itself: a finished row can take extra steps harmlessly. Flags
/// (in `column`'s high bits) appear only on categorical and zero-as-missing
/// nodes; plain nodes' `column` is the bare offset.
#[derive(Clone, Copy)]
#[repr(C)]
struct CompactNode {
    /// The threshold, or for a categorical node the index of its bitset range.
    threshold: f32,
    /// Block offset of the feature copy (as in [`PerfectNode`]) | flags.
    column: u32,
    left: u32,
}

#[derive(Clone, Copy)]
enum Layout {
    Perfect { nodes: u32, leaves: u32 },
    Compact { nodes: u32 },
}

/// A tree's top levels as a perfect tree of (padded) numeric nodes, with the
/// node of the tree's own layout that each bottom position leads to.
///
/// With AVX-512, 16 rows are compared against every head node with plain
/// contiguous loads (a node's feature copy is contiguous in the block), and
/// each lane keeps the decision of the node it is at: ~5 instructions per
/// row for 4 levels, with no gather and no dependent load chain. The walk in
/// the tree's own layout continues from `exit`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the AVX-512 walk only
struct Head {
    levels: u32,
    threshold: [f32; HEAD_NODES],
    column: [u32; HEAD_NODES],
    /// Node index (in the tree's layout) reached at each of the 2^levels positions.
    exit: [u32; HEAD_NODES + 1],
}

#[derive(Clone, Copy)]
struct CompiledTree {
    depth: u32,
    /// The shallowest leaf: no lane can finish before this many steps.
    leaf_depth_min: u32,
    group: u32,
    layout: Layout,
    head: Option<Head>,
}

pub(crate) struct TreeKernel {
    n_features: usize,
    n_groups: usize,
    base_margin: Vec<f64>,
    link: Link,
    /// In the model's order, so margins sum in the same order as the reference.
    trees: Vec<CompiledTree>,
    perfect_nodes: Vec<PerfectNode>,
    perfect_leaves: Vec<f32>,
    compact_nodes: Vec<CompactNode>,
    /// Leaf value per compact node (zero for internal nodes).
    compact_values: Vec<f32>,
    /// Categorical bitset ranges `(start, end)` into `category_bits`.
    category_ranges: Vec<(u32, u32)>,
    category_bits: Vec<u32>,
    has_zero_is_missing: bool,
    has_categorical: bool,
}

/// The block offset of feature `f`'s copy whose NaNs go the node's missing way.
fn column(feature: u32, missing_left: bool) -> u32 {
    (2 * feature + u32::from(!missing_left)) * BLOCK_ROWS as u32
}

fn flags(missing_left: bool, zero_is_missing: bool) -> u32 {
    (if missing_left { MISSING_LEFT } else { 0 })
        | (if zero_is_missing { ZERO_IS_MISSING } else { 0 })
}

/// Copies rows `start..end` of every feature into the block, twice: copy
/// `2f` with NaN as -inf (so `x < t` sends NaN left) and copy `2f + 1` with
/// NaN as +inf (so NaN goes right). A node reads the copy matching its
/// missing-value direction; a real ±inf is unchanged and compares as itself.
fn fill_block(features: &[&[f32]], start: usize, end: usize, block: &mut [f32]) {
    for (f, column) in features.iter().enumerate() {
        let (low, high) =
            block[2 * f * BLOCK_ROWS..(2 * f + 2) * BLOCK_ROWS].split_at_mut(BLOCK_ROWS);
        for ((x, l), h) in column[start..end]
            .iter()
            .zip(low.iter_mut())
            .zip(high.iter_mut())
        {
            let nan = x.is_nan();
            *l = if nan { f32::NEG_INFINITY } else { *x };
            *h = if nan { f32::INFINITY } else { *x };
        }
    }
}

/// Walks the top `levels` levels of `tree` as a perfect tree, breadth-first
/// positions (children of `pos` at `2pos + 1`, `2pos + 2`). A leaf above the
/// bottom fills its whole subtree: the positions under it are padding, and
/// either side reaches the leaf. `split(pos, node)` sees each real split and
/// returns false to abandon the walk; `bottom(slot, ir)` sees each of the
/// 2^levels bottom positions with the IR node there. Returns false if abandoned.
fn walk_padded(
    tree: &Tree,
    levels: usize,
    mut split: impl FnMut(usize, &Node) -> bool,
    mut bottom: impl FnMut(usize, usize),
) -> bool {
    let internal = (1usize << levels) - 1;
    let mut stack = vec![(0usize, 0usize)];
    while let Some((ir, pos)) = stack.pop() {
        if pos >= internal {
            bottom(pos - internal, ir);
            continue;
        }
        let node = &tree.nodes[ir];
        let (left, right) = match node {
            Node::Leaf { .. } => (ir, ir),
            Node::Numeric { left, right, .. } | Node::Categorical { left, right, .. } => {
                if !split(pos, node) {
                    return false;
                }
                (*left as usize, *right as usize)
            }
        };
        stack.push((left, 2 * pos + 1));
        stack.push((right, 2 * pos + 2));
    }
    true
}

/// The head of `tree` (see [`Head`]), or `None` when its top levels hold a
/// node the head cannot evaluate (categorical, zero-as-missing, a -inf threshold).
fn build_head(tree: &Tree, depth: usize, layout: Layout) -> Option<Head> {
    let levels = depth.min(HEAD_LEVELS);
    if levels == 0 {
        return None;
    }
    let mut head = Head {
        levels: levels as u32,
        threshold: [0.0; HEAD_NODES],
        column: [0; HEAD_NODES],
        exit: [0; HEAD_NODES + 1],
    };
    let supported = walk_padded(
        tree,
        levels,
        |pos, node| match *node {
            Node::Numeric {
                feature,
                threshold,
                missing_left,
                zero_is_missing: false,
                ..
            } if threshold != f32::NEG_INFINITY => {
                head.threshold[pos] = threshold;
                head.column[pos] = column(feature, missing_left);
                true
            }
            _ => false,
        },
        |slot, ir| {
            head.exit[slot] = match layout {
                // The perfect layout pads exactly as the head does: same positions.
                Layout::Perfect { .. } => (slot + (1 << levels) - 1) as u32,
                Layout::Compact { nodes } => nodes + ir as u32,
            };
        },
    );
    supported.then_some(head)
}

/// For 16-row groups of `block`, the node each row reaches after `head`.
///
/// # Safety
/// The CPU must support AVX-512F; `rows` must be a multiple of 16 and at most
/// `BLOCK_ROWS`; `block` must be a block of this kernel's features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn walk_head_avx512(head: &Head, block: &[f32], rows: usize, starts: &mut [u32]) {
    use std::arch::x86_64::*;
    debug_assert!(rows.is_multiple_of(16) && rows <= BLOCK_ROWS && starts.len() >= rows);
    let one = _mm512_set1_epi32(1);
    let exit = _mm512_loadu_si512(head.exit.as_ptr().cast());
    let first_exit = _mm512_set1_epi32((1 << head.levels) - 1);
    for r in (0..rows).step_by(16) {
        let mut idx = _mm512_setzero_si512();
        for level in 0..head.levels as usize {
            let first = (1usize << level) - 1;
            let mut right: __mmask16 = 0;
            for n in first..2 * first + 1 {
                // SAFETY: `column[n] + r + 16 <= 2 * n_features * BLOCK_ROWS`,
                // the block's length: columns are at most (2F - 1) * BLOCK_ROWS
                // and `r + 16 <= rows <= BLOCK_ROWS`.
                let x = _mm512_loadu_ps(block.as_ptr().add(head.column[n] as usize + r));
                let ge = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(head.threshold[n]));
                let here = _mm512_cmpeq_epi32_mask(idx, _mm512_set1_epi32(n as i32));
                right |= ge & here;
            }
            idx = _mm512_add_epi32(_mm512_add_epi32(idx, idx), one);
            idx = _mm512_mask_add_epi32(idx, right, idx, one);
        }
        let exits = _mm512_permutexvar_epi32(_mm512_sub_epi32(idx, first_exit), exit);
        // SAFETY: `r + 16 <= rows <= starts.len()`.
        _mm512_storeu_si512(starts.as_mut_ptr().add(r).cast(), exits);
    }
}

/// `left`, checking the breadth-first invariant that `right` follows it.
fn adjacent(left: u32, right: u32) -> u32 {
    assert_eq!(right, left + 1, "tree nodes must be stored breadth-first");
    left
}

/// Edges from the root to the shallowest leaf.
fn leaf_depth_min(tree: &Tree) -> usize {
    let mut depth = vec![0usize; tree.nodes.len()];
    let mut min = usize::MAX;
    for (i, node) in tree.nodes.iter().enumerate() {
        match node {
            Node::Leaf { .. } => min = min.min(depth[i]),
            Node::Numeric { left, right, .. } | Node::Categorical { left, right, .. } => {
                depth[*left as usize] = depth[i] + 1;
                depth[*right as usize] = depth[i] + 1;
            }
        }
    }
    min
}

impl TreeKernel {
    pub fn new(t: &TreeEnsemble, n_features: usize) -> Self {
        assert!(
            2 * n_features * BLOCK_ROWS <= OFFSET_MASK as usize,
            "too many features for the node encoding"
        );
        let mut k = Self {
            n_features,
            n_groups: t.n_groups,
            base_margin: t.base_margin.clone(),
            link: t.link,
            trees: Vec::with_capacity(t.trees.len()),
            perfect_nodes: Vec::new(),
            perfect_leaves: Vec::new(),
            compact_nodes: Vec::new(),
            compact_values: Vec::new(),
            category_ranges: Vec::new(),
            category_bits: Vec::new(),
            has_zero_is_missing: false,
            has_categorical: false,
        };
        for tree in &t.trees {
            let depth = tree.depth();
            let leaves = tree
                .nodes
                .iter()
                .filter(|n| matches!(n, Node::Leaf { .. }))
                .count();
            let categorical = tree
                .nodes
                .iter()
                .any(|n| matches!(n, Node::Categorical { .. }));
            let zero = tree.nodes.iter().any(|n| {
                matches!(
                    n,
                    Node::Numeric {
                        zero_is_missing: true,
                        ..
                    }
                )
            });
            // A threshold of -inf would not send a NaN read as -inf left.
            let plain = !categorical
                && !zero
                && tree
                    .nodes
                    .iter()
                    .all(|n| !matches!(n, Node::Numeric { threshold, .. } if *threshold == f32::NEG_INFINITY));
            k.has_categorical |= categorical;
            k.has_zero_is_missing |= zero || !plain;
            let layout = if plain
                && depth <= PERFECT_DEPTH_MAX
                && (1usize << depth) <= PERFECT_PADDING_MAX * leaves
            {
                k.add_perfect(tree, depth)
            } else {
                k.add_compact(tree)
            };
            let head = build_head(tree, depth, layout);
            k.trees.push(CompiledTree {
                depth: depth as u32,
                leaf_depth_min: leaf_depth_min(tree) as u32,
                group: tree.group,
                layout,
                head,
            });
        }
        k
    }

    pub fn layout_counts(&self) -> (usize, usize) {
        let perfect = self
            .trees
            .iter()
            .filter(|t| matches!(t.layout, Layout::Perfect { .. }))
            .count();
        (perfect, self.trees.len() - perfect)
    }

    fn add_perfect(&mut self, tree: &Tree, depth: usize) -> Layout {
        let internal = (1usize << depth) - 1;
        let nodes = self.perfect_nodes.len();
        let leaves = self.perfect_leaves.len();
        self.perfect_nodes
            .resize(nodes + internal, PerfectNode::default());
        self.perfect_leaves.resize(leaves + internal + 1, 0.0);
        let (perfect_nodes, perfect_leaves) = (&mut self.perfect_nodes, &mut self.perfect_leaves);
        walk_padded(
            tree,
            depth,
            |pos, node| {
                let Node::Numeric {
                    feature,
                    threshold,
                    missing_left,
                    zero_is_missing,
                    ..
                } = *node
                else {
                    unreachable!("categorical trees use the compact layout")
                };
                debug_assert!(
                    !zero_is_missing,
                    "zero-as-missing trees use the compact layout"
                );
                perfect_nodes[nodes + pos] = PerfectNode {
                    threshold,
                    column: column(feature, missing_left),
                };
                true
            },
            |slot, ir| {
                let Node::Leaf { value } = tree.nodes[ir] else {
                    unreachable!("a split at depth {depth} in a tree of depth {depth}")
                };
                perfect_leaves[leaves + slot] = value as f32;
            },
        );
        Layout::Perfect {
            nodes: nodes as u32,
            leaves: leaves as u32,
        }
    }

    fn add_compact(&mut self, tree: &Tree) -> Layout {
        let base = self.compact_nodes.len() as u32;
        let bits_base = self.category_bits.len() as u32;
        self.category_bits.extend_from_slice(&tree.category_bits);
        for (i, node) in tree.nodes.iter().enumerate() {
            let i = i as u32;
            let (compact, value) = match *node {
                Node::Leaf { value } => (
                    CompactNode {
                        threshold: f32::NEG_INFINITY,
                        column: 0,
                        left: (base + i).wrapping_sub(1),
                    },
                    value as f32,
                ),
                Node::Numeric {
                    feature,
                    threshold,
                    missing_left,
                    zero_is_missing,
                    left,
                    right,
                } => (
                    CompactNode {
                        threshold,
                        column: column(feature, missing_left)
                            | if zero_is_missing {
                                flags(missing_left, true)
                            } else {
                                // Plain nodes carry no flags: the copy of the
                                // feature they read already routes NaN.
                                0
                            },
                        left: base + adjacent(left, right),
                    },
                    0.0,
                ),
                Node::Categorical {
                    feature,
                    bits_start,
                    bits_end,
                    left,
                    right,
                } => {
                    let range = self.category_ranges.len() as u32;
                    self.category_ranges
                        .push((bits_base + bits_start, bits_base + bits_end));
                    (
                        // The NaN-as-+inf copy: NaN reads as +inf, not a category.
                        CompactNode {
                            threshold: f32::from_bits(range),
                            column: column(feature, false) | CATEGORICAL,
                            left: base + adjacent(left, right),
                        },
                        0.0,
                    )
                }
            };
            self.compact_nodes.push(compact);
            self.compact_values.push(value);
        }
        Layout::Compact { nodes: base }
    }

    pub fn score(&self, isa: super::Isa, features: &[&[f32]], out: &mut [&mut [f32]]) {
        let heads = isa == super::Isa::Avx512;
        match (self.has_zero_is_missing, self.has_categorical) {
            (false, false) => self.score_with::<false, false>(heads, features, out),
            (true, false) => self.score_with::<true, false>(heads, features, out),
            (false, true) => self.score_with::<false, true>(heads, features, out),
            (true, true) => self.score_with::<true, true>(heads, features, out),
        }
    }

    fn score_with<const ZERO: bool, const CAT: bool>(
        &self,
        heads: bool,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
    ) {
        let rows = out[0].len();
        // Per-call scratch, reused for every block.
        let mut block = vec![0f32; 2 * self.n_features * BLOCK_ROWS];
        let mut acc = vec![0f64; BLOCK_ROWS * self.n_groups];
        let mut margins = vec![0f64; self.n_groups];
        let mut starts = [0u32; BLOCK_ROWS];
        let mut start = 0;
        while start < rows {
            let end = (start + BLOCK_ROWS).min(rows);
            let n = end - start;
            fill_block(features, start, end, &mut block);
            // Walk whole lane groups; rows past `n` read stale block values and
            // their sums are never read. A short block (a small batch, a
            // batch's tail) skips the 16-row heads and walks only the lane
            // groups it needs: one row walks 12, not 48.
            let short = n < WALK_MULTIPLE;
            let walked = if short {
                n.div_ceil(LANES) * LANES
            } else {
                n.div_ceil(WALK_MULTIPLE) * WALK_MULTIPLE
            };
            let heads = heads && !short;
            acc.fill(0.0);
            for tree in &self.trees {
                let g = tree.group as usize;
                let acc = &mut acc[g * BLOCK_ROWS..g * BLOCK_ROWS + walked];
                let done = match (heads, &tree.head) {
                    #[cfg(target_arch = "x86_64")]
                    (true, Some(head)) => {
                        // SAFETY: `heads` is only set when the scorer's ISA is
                        // AVX-512, checked available when it was built; `walked`
                        // is a multiple of 16 (heads are off for short blocks)
                        // and at most BLOCK_ROWS.
                        unsafe { walk_head_avx512(head, &block, walked, &mut starts) };
                        head.levels
                    }
                    _ => {
                        let root = match tree.layout {
                            Layout::Perfect { .. } => 0,
                            Layout::Compact { nodes } => nodes,
                        };
                        starts[..walked].fill(root);
                        0
                    }
                };
                match tree.layout {
                    Layout::Perfect { nodes, leaves } => {
                        let internal = (1usize << tree.depth) - 1;
                        let nodes = &self.perfect_nodes[nodes as usize..nodes as usize + internal];
                        let leaves =
                            &self.perfect_leaves[leaves as usize..leaves as usize + internal + 1];
                        walk_perfect(
                            nodes,
                            leaves,
                            tree.depth - done,
                            &starts[..walked],
                            &block,
                            acc,
                        );
                    }
                    Layout::Compact { .. } => {
                        self.walk_compact::<ZERO, CAT>(tree, done, &starts[..walked], &block, acc)
                    }
                }
            }
            for r in 0..n {
                for (g, m) in margins.iter_mut().enumerate() {
                    *m = self.base_margin[g] + acc[g * BLOCK_ROWS + r];
                }
                write_outputs(self.link, &mut margins, start + r, out);
            }
            start = end;
        }
    }

    /// Walks lane groups until every lane is on a leaf (leaves step to
    /// themselves, so a finished lane just waits), checking every few steps
    /// once the shallowest leaf is reachable.
    #[inline(always)]
    fn walk_compact<const ZERO: bool, const CAT: bool>(
        &self,
        tree: &CompiledTree,
        done: u32,
        starts: &[u32],
        block: &[f32],
        acc: &mut [f64],
    ) {
        const CHECK_EVERY: u32 = 4;
        let nodes = &self.compact_nodes[..];
        let step = |idx: u32, row: usize| -> u32 {
            debug_assert!((idx as usize) < nodes.len());
            // SAFETY: `idx` is a node of this kernel: a root, a head exit, or a
            // child, and `build_tree` checked every child index of the model.
            let node = unsafe { *nodes.get_unchecked(idx as usize) };
            let column = if ZERO || CAT {
                node.column & OFFSET_MASK
            } else {
                node.column
            };
            let at = column as usize + row;
            debug_assert!(at < block.len());
            // SAFETY: columns are below (2F - 1) * BLOCK_ROWS + 1 and
            // `row < BLOCK_ROWS`, so `at < 2F * BLOCK_ROWS == block.len()`.
            let x = unsafe { *block.get_unchecked(at) };
            let left = if CAT && node.column & CATEGORICAL != 0 {
                let (start, end) = self.category_ranges[node.threshold.to_bits() as usize];
                categorical_left(x, &self.category_bits[start as usize..end as usize])
            } else if ZERO && node.column & ZERO_IS_MISSING != 0 && x.abs() <= ZERO_THRESHOLD {
                node.column & MISSING_LEFT != 0
            } else {
                x < node.threshold
            };
            node.left.wrapping_add(1 - u32::from(left))
        };
        for r in (0..acc.len()).step_by(LANES) {
            let mut idx = [0u32; LANES];
            idx.copy_from_slice(&starts[r..r + LANES]);
            let mut steps = done;
            while steps < tree.depth {
                for (k, i) in idx.iter_mut().enumerate() {
                    *i = step(*i, r + k);
                }
                steps += 1;
                // (Measured: comparing `idx` with its value a step earlier,
                // which needs no loads, is slower: the copy spills the lanes.)
                if steps >= tree.leaf_depth_min
                    && steps.is_multiple_of(CHECK_EVERY)
                    // A leaf is the one node whose `left` is one below itself
                    // (children always follow their parent breadth-first).
                    && idx.iter().all(|&i| nodes[i as usize].left.wrapping_add(1) == i)
                {
                    break;
                }
            }
            for (k, i) in idx.iter().enumerate() {
                acc[r + k] += self.compact_values[*i as usize] as f64;
            }
        }
    }
}

/// The IR's categorical rule (see [`Node::Categorical`]).
#[inline(always)]
fn categorical_left(x: f32, bits: &[u32]) -> bool {
    if x.is_nan() {
        return false;
    }
    let c = x as i32;
    c >= 0
        && bits
            .get(c as usize / 32)
            .is_some_and(|w| (w >> (c as u32 % 32)) & 1 == 1)
}

/// Walks `steps` levels from each row's start node to a leaf.
#[inline(always)]
fn walk_perfect(
    nodes: &[PerfectNode],
    leaves: &[f32],
    steps: u32,
    starts: &[u32],
    block: &[f32],
    acc: &mut [f64],
) {
    let internal = nodes.len();
    debug_assert_eq!(leaves.len(), internal + 1);
    debug_assert!(
        acc.len().is_multiple_of(LANES) && acc.len() <= BLOCK_ROWS && starts.len() == acc.len()
    );
    for r in (0..acc.len()).step_by(LANES) {
        let mut idx = [0usize; LANES];
        for (i, s) in idx.iter_mut().zip(&starts[r..r + LANES]) {
            *i = *s as usize;
        }
        for _ in 0..steps {
            for (k, i) in idx.iter_mut().enumerate() {
                debug_assert!(*i < internal);
                // SAFETY: `*i < internal`: a start at level d (the root, or a head
                // exit) is below 2^(d+1) - 1, each step goes one level down, and
                // `steps` ends one level above the leaves.
                let node = unsafe { *nodes.get_unchecked(*i) };
                let at = node.column as usize + r + k;
                debug_assert!(at < block.len());
                // SAFETY: `column <= (2 * n_features - 1) * BLOCK_ROWS` (feature
                // indices are checked against the model's features on import) and
                // `r + k < BLOCK_ROWS`, so `at < 2 * n_features * BLOCK_ROWS == block.len()`.
                let x = unsafe { *block.get_unchecked(at) };
                *i = 2 * *i + 2 - usize::from(x < node.threshold);
            }
        }
        for (k, i) in idx.iter().enumerate() {
            acc[r + k] += leaves[*i - internal] as f64;
        }
    }
}

// Tree ensembles: one invocation per row walks every tree.
//
// A node is a vec4<u32>:
//   x: flags | feature. LEAF (bit 31), MISSING_LEFT (30), ZERO_MISSING (29),
//      CATEGORICAL (28); the feature index in the low 28 bits.
//   y: leaf: the leaf value's f32 bits. numeric: the threshold's order key.
//      categorical: the order key of 32 × (words in its bitset).
//   z: the left child's index; the right child is z + 1.
//   w: categorical: the first word of its bitset in `cats`.
// An order key maps f32 bits to u32 so that unsigned order is float order
// (-0 is folded onto +0): `x < threshold` is one integer compare, exact for
// ±inf, and no float comparison ever sees a NaN.
//
// ensemble: N_MARGINS base margins (f32 bits), the link's scale (f32 bits),
// then (root node, output group) per tree.

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> nodes: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> ensemble: array<u32>;
@group(0) @binding(3) var<storage, read> cats: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const LEAF: u32 = 0x80000000u;
const MISSING_LEFT: u32 = 0x40000000u;
const ZERO_MISSING: u32 = 0x20000000u;
const CATEGORICAL: u32 = 0x10000000u;
const FEATURE_MASK: u32 = 0x0fffffffu;
// The bits of 1e-35f (LightGBM's zero threshold).
const ZERO_BITS: u32 = 0x0554ad2eu;
// The order key of -1.0: categorical values must be above it (trunc >= 0).
const MINUS_ONE_KEY: u32 = 0x407fffffu;

fn order_key(bits: u32) -> u32 {
    let b = select(bits, 0u, bits == 0x80000000u);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let rows = x[0];
    let r = id.x + id.y * WG * DISPATCH_X;
    if (r >= rows) {
        return;
    }
    var m: array<f32, N_MARGINS>;
    for (var k = 0u; k < N_MARGINS; k++) {
        m[k] = bitcast<f32>(ensemble[k]);
    }
    let trees = N_MARGINS + 1u;
    for (var t = 0u; t < N_TREES; t++) {
        var n = ensemble[trees + 2u * t];
        // MAX_DEPTH steps reach a leaf from any root; a leaf ends the walk early.
        for (var d = 0u; d < MAX_DEPTH; d++) {
            let node = nodes[n];
            if ((node.x & LEAF) != 0u) {
                break;
            }
            let bits = x[HEADER + (node.x & FEATURE_MASK) * rows + r];
            let magnitude = bits & 0x7fffffffu;
            let nan = magnitude > 0x7f800000u;
            let key = order_key(bits);
            var left: bool;
            if ((node.x & CATEGORICAL) != 0u) {
                // Left iff trunc(x) is a category in the set: NaN, values
                // at or below -1 and values past the set go right.
                left = false;
                if (!nan && key > MINUS_ONE_KEY && key < node.y) {
                    let c = u32(max(i32(bitcast<f32>(bits)), 0));
                    left = ((cats[node.w + c / 32u] >> (c % 32u)) & 1u) == 1u;
                }
            } else {
                let missing = nan || ((node.x & ZERO_MISSING) != 0u && magnitude <= ZERO_BITS);
                left = select(key < node.y, (node.x & MISSING_LEFT) != 0u, missing);
            }
            n = node.z + select(1u, 0u, left);
        }
        let group = ensemble[trees + 2u * t + 1u];
        m[group] += bitcast<f32>(nodes[n].y);
    }
    write_outputs(r, rows, &m, bitcast<f32>(ensemble[N_MARGINS]));
}

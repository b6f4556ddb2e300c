// Multilayer perceptrons: one invocation per row runs every dense layer,
// its activations in two arrays of WIDTH floats (the widest layer).
//
// params: per layer, its weights (row-major, one row of `inputs` per
// output) then its biases; the link's scale last (at SCALE_AT).
// layers: per layer (inputs, outputs, weight offset, activation); biases
// follow the weights.
// Rows with a NaN or infinite input go to the CPU (fixups.wgsl).

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> layers: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> fixups: array<atomic<u32>>;

const ACT_IDENTITY: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_TANH: u32 = 2u;
const ACT_SIGMOID: u32 = 3u;

fn activate(v: f32, activation: u32) -> f32 {
    if (activation == ACT_RELU) {
        return max(v, 0.0);
    } else if (activation == ACT_TANH) {
        // From exp of a non-positive argument: no overflow, no cancellation
        // worse than an f32 rounding.
        let e = exp(-2.0 * min(abs(v), 40.0));
        return sign(v) * (1.0 - e) / (1.0 + e);
    } else if (activation == ACT_SIGMOID) {
        return 1.0 / (1.0 + exp_clamped(-v));
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let rows = x[0];
    let r = id.x + id.y * WG * DISPATCH_X;
    if (r >= rows) {
        return;
    }
    var a: array<f32, WIDTH>;
    var b: array<f32, WIDTH>;
    if (handed_to_cpu(r, rows)) {
        return;
    }
    for (var j = 0u; j < N_FEATURES; j++) {
        a[j] = bitcast<f32>(x[HEADER + j * rows + r]);
    }
    for (var l = 0u; l < N_LAYERS; l++) {
        let layer = layers[l];
        let inputs = layer.x;
        let outputs = layer.y;
        let bias = layer.z + inputs * outputs;
        for (var o = 0u; o < outputs; o++) {
            var s = params[bias + o];
            let row = layer.z + o * inputs;
            for (var i = 0u; i < inputs; i++) {
                s += params[row + i] * a[i];
            }
            b[o] = activate(s, layer.w);
        }
        for (var o = 0u; o < outputs; o++) {
            a[o] = b[o];
        }
    }
    var m: array<f32, N_MARGINS>;
    for (var k = 0u; k < N_MARGINS; k++) {
        m[k] = a[k];
    }
    write_outputs(r, rows, &m, params[SCALE_AT]);
}

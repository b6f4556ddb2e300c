// Linear models: one invocation per row, margins accumulated in f32.
//
// params: the weights (N_MARGINS rows of N_FEATURES, row-major), then
// N_MARGINS biases, then the link's scale.
// A row with a NaN or infinite input is not scored here (fixups.wgsl): the
// host scores it on the CPU, where f64 gives the reference's exact NaN/inf
// rules.

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> fixups: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let rows = x[0];
    let r = id.x + id.y * WG * DISPATCH_X;
    if (r >= rows) {
        return;
    }
    if (handed_to_cpu(r, rows)) {
        return;
    }
    var m: array<f32, N_MARGINS>;
    let bias = N_MARGINS * N_FEATURES;
    for (var k = 0u; k < N_MARGINS; k++) {
        m[k] = params[bias + k];
    }
    for (var j = 0u; j < N_FEATURES; j++) {
        let v = bitcast<f32>(x[HEADER + j * rows + r]);
        for (var k = 0u; k < N_MARGINS; k++) {
            m[k] += params[k * N_FEATURES + j] * v;
        }
    }
    write_outputs(r, rows, &m, params[bias + N_MARGINS]);
}

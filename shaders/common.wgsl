// Shared by every roo scoring shader. The host prepends the model's
// constants (N_MARGINS, LINK, WG, ...) and appends one family's shader.
//
// Inputs arrive as raw f32 bits (array<u32>): WGSL lets an implementation
// assume that no NaN or infinity reaches float arithmetic, so every test
// that must see them (missing values, ±inf against a threshold) is done
// on the bits, never with float comparisons.
//
// The input buffer is a 4-word header (word 0: rows in this chunk) and
// then the model's features, column-major: feature f of row r is word
// HEADER + f * rows + r. Outputs are column-major too: out[k * rows + r].

const HEADER: u32 = 4u;
const LINK_IDENTITY: u32 = 0u;
const LINK_SIGMOID: u32 = 1u;
const LINK_SOFTMAX: u32 = 2u;
const LINK_ARGMAX: u32 = 3u;

// exp's argument is kept where f32 cannot overflow; the result is then
// within an f32 rounding of the f64 reference's for every margin.
fn exp_clamped(v: f32) -> f32 {
    return exp(clamp(v, -87.0, 87.0));
}

// Applies the link to one row's margins and writes its outputs.
fn write_outputs(r: u32, rows: u32, m: ptr<function, array<f32, N_MARGINS>>, scale: f32) {
    if (LINK == LINK_IDENTITY) {
        for (var k = 0u; k < N_MARGINS; k++) {
            out[k * rows + r] = (*m)[k];
        }
    } else if (LINK == LINK_SIGMOID) {
        for (var k = 0u; k < N_MARGINS; k++) {
            out[k * rows + r] = 1.0 / (1.0 + exp_clamped(-scale * (*m)[k]));
        }
    } else if (LINK == LINK_SOFTMAX) {
        var top = (*m)[0];
        for (var k = 1u; k < N_MARGINS; k++) {
            top = max(top, (*m)[k]);
        }
        var sum = 0.0;
        for (var k = 0u; k < N_MARGINS; k++) {
            let e = exp_clamped((*m)[k] - top);
            (*m)[k] = e;
            sum += e;
        }
        for (var k = 0u; k < N_MARGINS; k++) {
            out[k * rows + r] = (*m)[k] / sum;
        }
    } else {
        // The first of equal maxima, as XGBoost's std::max_element picks.
        var best = 0u;
        for (var k = 1u; k < N_MARGINS; k++) {
            if ((*m)[k] > (*m)[best]) {
                best = k;
            }
        }
        out[r] = f32(best);
    }
}

// True when the f32 with these bits is NaN or ±inf.
fn non_finite(bits: u32) -> bool {
    return (bits & 0x7f800000u) == 0x7f800000u;
}

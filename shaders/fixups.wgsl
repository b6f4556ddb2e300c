// Rows the CPU scores instead (linear.wgsl, mlp.wgsl): a row with a NaN
// or infinite input goes to `fixups`, whose word 0 counts them and whose
// next FIXUP_CAP words list them; past the cap the host finds them itself.
// The host appends this after a shader that declares `fixups`.

// True when any of the row's features is NaN or ±inf; the row is then listed.
fn handed_to_cpu(r: u32, rows: u32) -> bool {
    for (var j = 0u; j < N_FEATURES; j++) {
        if (non_finite(x[HEADER + j * rows + r])) {
            let slot = atomicAdd(&fixups[0], 1u);
            if (slot < FIXUP_CAP) {
                atomicStore(&fixups[1u + slot], r);
            }
            return true;
        }
    }
    return false;
}

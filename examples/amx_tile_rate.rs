//! What AMX's tile instructions sustain on this CPU, one core: `tdpbusd` alone (four independent
//! accumulators), `tileloadd` alone (four tiles of 16 rows × 64 bytes from L1, at the
//! activations' stride and at the packed weights' 64 bytes), and the int8 kernel's own step
//! (`cpu::amx::block`: 2 activation tiles and 2 weight tiles loaded for 4 dot products), and that
//! step with the activations laid out in tiles as the weights are. The
//! README's Intel section reads these against the int8 kernel's rate in
//! `cargo bench --bench kernels -- 'int8 amx'`.
//!
//!   cargo run --release --example amx_tile_rate
#[cfg(target_arch = "x86_64")]
fn main() {
    use sbert_tui::model::cpu::amx;
    use std::arch::asm;
    use std::time::Instant;

    if !amx::usable(amx::Op::Int8) {
        eprintln!("this CPU (or OS) gives this process no AMX-INT8: nothing to time");
        return;
    }
    // Activation rows `KP` bytes apart (MiniLM's feed-forward input); 32 rows and 2 weight groups
    // of `16 · KP` bytes: 24 KiB each, in L1 after the first round.
    const KP: usize = 384;
    let a = vec![1u8; 32 * KP];
    let b = vec![1u8; 32 * KP];
    let reps = 200_000usize;
    let macs = (reps * 4 * 16 * 16 * 64) as f64;
    // SAFETY: AMX-INT8 is usable (checked); every tile load reads 16 rows of 64 bytes inside `a`
    // or `b` (offsets below `KP - 64` plus 15 strides); the dots use configured tiles only.
    unsafe {
        amx::configure();
        asm!(
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7"
        );
        for round in 0..3 {
            let t = Instant::now();
            for _ in 0..reps {
                asm!(
                    "tdpbusd tmm0, tmm4, tmm6",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                );
            }
            let dots = macs / t.elapsed().as_secs_f64() / 1e9;
            let mut loads = [0f64; 2];
            for (at, stride) in loads.iter_mut().zip([KP, 64]) {
                let t = Instant::now();
                for r in 0..reps {
                    let p = a.as_ptr().add((r % (KP / 64)) * 64);
                    asm!(
                        "tileloadd tmm4, [{p} + {s}*1]",
                        "tileloadd tmm5, [{p} + {s}*1 + 64]",
                        "tileloadd tmm6, [{p} + {s}*1 + 128]",
                        "tileloadd tmm7, [{p} + {s}*1 + 192]",
                        p = in(reg) if stride == 64 { b.as_ptr() } else { p },
                        s = in(reg) stride,
                        options(nostack, readonly)
                    );
                }
                *at = t.elapsed().as_secs_f64() / reps as f64 / 4.0 * 1e9;
            }
            // The step as the kernel runs it (activation rows `KP` bytes apart), and with the
            // activations laid out as the weights are (each tile's 16 rows of 64 bytes contiguous).
            let mut step = [0f64; 2];
            for (at, tiled) in step.iter_mut().zip([false, true]) {
                // Where a step's two activation tiles start, and their rows' stride.
                let (s, a_at, a1_at) = if tiled {
                    (64, 16, 16 * KP)
                } else {
                    (KP, 1, 16 * KP)
                };
                let t = Instant::now();
                for r in 0..reps {
                    let p = (r % (KP / 64)) * 64;
                    asm!(
                        "tileloadd tmm4, [{a} + {s}*1]",
                        "tileloadd tmm6, [{b} + {w}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {w}*1]",
                        "tdpbusd tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {s}*1]",
                        "tdpbusd tmm2, tmm5, tmm6",
                        "tdpbusd tmm3, tmm5, tmm7",
                        a = in(reg) a.as_ptr().add(a_at * p),
                        a1 = in(reg) a.as_ptr().add(a1_at + a_at * p),
                        b = in(reg) b.as_ptr().add(16 * p),
                        b1 = in(reg) b.as_ptr().add(16 * KP + 16 * p),
                        s = in(reg) s,
                        w = in(reg) 64usize,
                        options(nostack, readonly)
                    );
                }
                *at = macs / t.elapsed().as_secs_f64() / 1e9;
            }
            println!(
                "round {round}: tdpbusd alone {dots:.0} G multiply-adds/s; tileloadd {:.1} ns \
                 (activation stride), {:.1} ns (64 bytes); the kernel's step {:.0} G/s, with \
                 the activations in tiles {:.0} G/s",
                loads[0], loads[1], step[0], step[1]
            );
        }
        amx::release();
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("AMX is x86-64 only");
}

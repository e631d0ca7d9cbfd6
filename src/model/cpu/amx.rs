//! AMX (Advanced Matrix Extensions, Intel Xeon from Sapphire Rapids): the tile registers and
//! their dot-product instructions, for the int8 (`quant.rs`) and bf16 (`bf16.rs`) products.
//!
//! The AMX intrinsics are not stable in Rust yet, so the instructions are inline assembly. Eight
//! tile registers of 16 rows × 64 bytes: `tmm0..3` accumulate a 32 × 32 block (2 × 2 tiles of
//! 16 × 16 `i32` or `f32`), `tmm4..5` hold 2 × 16 activation rows of 64 bytes (64 u8 or 32
//! bf16), `tmm6..7` two groups of 16 weight columns in the layout the AVX-512 kernels already
//! pack them in (per group, one 64-byte row per 4 bytes of `k` per column: 4 int8 or 2 bf16),
//! so a weight tile for activation bytes `p..p + 64` starts `16 · p` bytes into its group.
//!
//! The caller checks [`usable`], then runs [`block`]s between [`configure`] and [`release`] on
//! one thread (the configuration is per thread).

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Columns and rows of one accumulator tile; bytes of one tile row.
pub const COLS: usize = 16;
pub const ROWS: usize = 16;
pub const ROW_BYTES: usize = 64;

/// Four accumulator tiles (`i32` or `f32` bits): rows `0..16` by column groups 0 and 1, then
/// rows `16..32` by the same groups.
pub type Acc = [[[u32; COLS]; ROWS]; 4];

/// The dot product a kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `tdpbusd`: u8 activations × i8 weights, summed into `i32`.
    Int8,
    /// `tdpbf16ps`: bf16 × bf16, summed into `f32`.
    Bf16,
}

/// Whether this CPU has AMX-TILE and the instructions of `op`, with AVX-512 F (for the
/// kernels' finishing), and the OS lets this process use the tile registers.
pub fn usable(op: Op) -> bool {
    let leaf7 = __cpuid_count(7, 0);
    let bit = |b: u32| (leaf7.edx >> b) & 1 == 1;
    let (tile, int8, bf16) = (bit(24), bit(25), bit(22));
    let has_op = match op {
        Op::Int8 => int8,
        Op::Bf16 => bf16,
    };
    tile && has_op && std::arch::is_x86_feature_detected!("avx512f") && os_allows_tiles()
}

/// [`usable`], and `check` (a small product through the tiles against a reference) passes: asked
/// once per op; a failed check is reported on stderr and leaves AMX unused for that op.
pub fn checked(op: Op, check: fn() -> bool) -> bool {
    static INT8: OnceLock<bool> = OnceLock::new();
    static BF16: OnceLock<bool> = OnceLock::new();
    let once = match op {
        Op::Int8 => &INT8,
        Op::Bf16 => &BF16,
    };
    *once.get_or_init(|| {
        if !usable(op) {
            return false;
        }
        let ok = check();
        if !ok {
            eprintln!(
                "warning: this CPU reports AMX, but a product through its tiles ({op:?}) \
                 differed from the reference; AMX is left unused for it"
            );
        }
        ok
    })
}

/// Plain data whose bytes the tiles read: no padding, any bit pattern valid.
pub trait Plain: Copy + private::Sealed {}
impl Plain for u8 {}
impl Plain for i8 {}
impl Plain for u16 {}
mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
    impl Sealed for u16 {}
}

/// The bytes of a slice of [`Plain`] values.
pub fn bytes<T: Plain>(s: &[T]) -> &[u8] {
    // SAFETY: `T` is u8, i8 or u16 (sealed): no padding; the length is the slice's in bytes.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

/// Rows `i0..i1` × columns `j0..j1` of a product in 32 × 32 blocks: `run` (AMX's [`block`] or its
/// emulation) fills the accumulators of each block, and `finish(acc, r0, c0)` gets each tile that
/// holds part of the product (its rows `r0..min(r0 + 16, i1)`, columns `c0..min(c0 + 16, j1)`).
///
/// `a` holds the activation rows, `kp` bytes each (a multiple of 64), zero rows to a multiple of
/// 32 past `i1`; `b` the packed weights of `n` columns, `16 · kp` bytes per group of 16; `j0` is
/// a multiple of 16 and `j1 <= n` (checked). `run` gets pointers that satisfy [`block`]'s
/// contract.
#[allow(clippy::too_many_arguments)]
pub fn for_blocks(
    a: &[u8],
    b: &[u8],
    kp: usize,
    n: usize,
    (i0, i1): (usize, usize),
    (j0, j1): (usize, usize),
    mut run: impl FnMut(*const u8, *const u8, usize, bool, bool, &mut Acc),
    mut finish: impl FnMut(&[[u32; COLS]; ROWS], usize, usize),
) {
    assert!(kp.is_multiple_of(ROW_BYTES) && j0.is_multiple_of(COLS) && j1 <= n);
    assert!(a.len() >= i1.next_multiple_of(2 * ROWS) * kp);
    assert_eq!(b.len(), n.next_multiple_of(COLS) * kp);
    let mut acc = [[[0u32; COLS]; ROWS]; 4];
    let mut i = i0;
    while i < i1 {
        let two_rows = i + ROWS < i1;
        let mut j = j0;
        while j < j1 {
            // Rows `i..i + 32` of `a` exist (padded), `kp` bytes apart; group `j / 16` of `b` and,
            // when `j + 16 < j1 <= n`, the next, `16 · kp` bytes each.
            run(
                a[i * kp..].as_ptr(),
                b[j * kp..].as_ptr(),
                kp,
                two_rows,
                j + COLS < j1,
                &mut acc,
            );
            for (t, acc) in acc.iter().enumerate() {
                let (r0, c0) = (i + (t / 2) * ROWS, j + (t % 2) * COLS);
                if r0 < i1 && c0 < j1 {
                    finish(acc, r0, c0);
                }
            }
            j += 2 * COLS;
        }
        i += 2 * ROWS;
    }
}

/// Linux hands the tile data state to a process that asks for it
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); then XCR0 must have the tile
/// configuration and data bits (17 and 18). Asked once per process.
fn os_allows_tiles() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain system call with integer arguments.
            let granted = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            } == 0;
            // OSXSAVE (leaf 1, ecx bit 27) says `xgetbv` may run.
            let osxsave = (__cpuid(1).ecx >> 27) & 1 == 1;
            granted && osxsave && {
                let (lo, _hi): (u32, u32);
                // SAFETY: `xgetbv` with ecx = 0 reads XCR0; OSXSAVE is set.
                unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi) };
                (lo >> 17) & 3 == 3
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    })
}

/// The tile configuration (palette 1): eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Loads the tile configuration on this thread.
///
/// # Safety
/// [`usable`] is true for the op the blocks will run.
pub unsafe fn configure() {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    for t in 0..8 {
        c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(ROW_BYTES as u16).to_le_bytes());
        c[48 + t] = ROWS as u8;
    }
    let config = Config(c);
    // SAFETY: AMX is usable (caller); the configuration is 64 aligned bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
}

/// Returns the tile registers to their initial state on this thread.
///
/// # Safety
/// As [`configure`].
pub unsafe fn release() {
    // SAFETY: AMX is usable (caller).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Zeroes the accumulators, runs the dot products over `kp` bytes of each activation row, and
/// stores the accumulators to `acc`: tiles 0 and 1 (rows from `a` by weight groups `b` and the
/// next), tiles 2 and 3 (the next 16 rows) when `two_rows`; the second group's only when
/// `two_groups` (the others keep what they held).
///
/// # Safety
/// [`configure`] ran on this thread, for an `op` that is [`usable`]; `kp` is a multiple of 64;
/// `a` points at 32 rows of `kp` bytes, `kp` apart (16 when `!two_rows`), `b` at 2 groups of
/// `16 · kp` bytes (1 when `!two_groups`).
#[inline(always)]
pub unsafe fn block(
    op: Op,
    a: *const u8,
    b: *const u8,
    kp: usize,
    two_rows: bool,
    two_groups: bool,
    acc: &mut Acc,
) {
    let (a1, b1) = (a.wrapping_add(ROWS * kp), b.wrapping_add(COLS * kp));
    macro_rules! dot {
        ($c:literal, $a:literal, $b:literal) => {
            match op {
                Op::Int8 => asm!(
                    concat!("tdpbusd ", $c, ", ", $a, ", ", $b),
                    options(nostack, nomem)
                ),
                Op::Bf16 => asm!(
                    concat!("tdpbf16ps ", $c, ", ", $a, ", ", $b),
                    options(nostack, nomem)
                ),
            }
        };
    }
    macro_rules! load {
        ($t:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tileloadd ", $t, ", [{p} + {s}*1]"), p = in(reg) $ptr, s = in(reg) $stride,
                 options(nostack, readonly))
        };
    }
    macro_rules! store {
        ($t:literal, $tile:expr) => {
            asm!(concat!("tilestored [{p} + {s}*1], ", $t), p = in(reg) $tile.as_mut_ptr(),
                 s = in(reg) COLS * 4, options(nostack))
        };
    }
    // SAFETY (each instruction): the caller's contract. Loads read 16 rows of 64 bytes at their
    // stride; stores write 16 rows of 64 bytes, 64 bytes apart, into `acc`'s tiles.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let mut p = 0;
        while p < kp {
            // The weights for activation bytes `p..p + 64`: 16 rows of 64 bytes from `16 · p`.
            let bp = p * COLS;
            load!("tmm4", a.add(p), kp);
            load!("tmm6", b.add(bp), ROW_BYTES);
            dot!("tmm0", "tmm4", "tmm6");
            if two_groups {
                load!("tmm7", b1.add(bp), ROW_BYTES);
                dot!("tmm1", "tmm4", "tmm7");
            }
            if two_rows {
                load!("tmm5", a1.add(p), kp);
                dot!("tmm2", "tmm5", "tmm6");
                if two_groups {
                    dot!("tmm3", "tmm5", "tmm7");
                }
            }
            p += ROW_BYTES;
        }
        store!("tmm0", acc[0]);
        if two_groups {
            store!("tmm1", acc[1]);
        }
        if two_rows {
            store!("tmm2", acc[2]);
            if two_groups {
                store!("tmm3", acc[3]);
            }
        }
    }
}

/// What [`block`] computes, in plain loops (for checking the kernels' loops and layouts on
/// CPUs without AMX). bf16 sums run in `f32` in `k` order (AMX's own order and rounding of the
/// pairs differ within the bf16 kernels' tolerance).
///
/// # Safety
/// As [`block`], less the tile configuration.
#[cfg(test)]
pub unsafe fn block_emulated(
    op: Op,
    a: *const u8,
    b: *const u8,
    kp: usize,
    two_rows: bool,
    two_groups: bool,
    acc: &mut Acc,
) {
    for (t, acc) in acc.iter_mut().enumerate() {
        let (rt, gt) = (t / 2, t % 2);
        if (rt == 1 && !two_rows) || (gt == 1 && !two_groups) {
            continue;
        }
        for (m, row) in acc.iter_mut().enumerate() {
            for (n, v) in row.iter_mut().enumerate() {
                let (mut si, mut sf) = (0i32, 0f32);
                for p in 0..kp / 4 {
                    // Four bytes of activation row `m` and of column `n` (weight row `p` of
                    // 64 bytes within the group).
                    // SAFETY: inside the rows and groups of the caller's contract.
                    let (x, y) = unsafe {
                        (
                            std::slice::from_raw_parts(a.add((rt * ROWS + m) * kp + 4 * p), 4),
                            std::slice::from_raw_parts(
                                b.add(gt * COLS * kp + p * ROW_BYTES + 4 * n),
                                4,
                            ),
                        )
                    };
                    match op {
                        Op::Int8 => {
                            for e in 0..4 {
                                si += x[e] as i32 * y[e] as i8 as i32;
                            }
                        }
                        Op::Bf16 => {
                            for e in 0..2 {
                                let bf = |s: &[u8]| {
                                    f32::from_bits(
                                        (u16::from_le_bytes([s[2 * e], s[2 * e + 1]]) as u32) << 16,
                                    )
                                };
                                sf += bf(x) * bf(y);
                            }
                        }
                    }
                }
                *v = match op {
                    Op::Int8 => si as u32,
                    Op::Bf16 => sf.to_bits(),
                };
            }
        }
    }
}

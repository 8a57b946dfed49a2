//! Which instruction set the kernels use: the widest this CPU has, or a narrower one
//! when `RUNNER_CPU_FEATURES` (`avx512`, `avx2`, `neon`, `scalar`) asks, so that a
//! machine can measure and test the paths other CPUs take. Every kernel asks here,
//! never the CPU directly.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// Instruction sets, narrowest first. An architecture has its own chain from `Scalar`
/// (x86-64: AVX2, AVX-512; aarch64: NEON); a level of another architecture is never in
/// use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline code only (x86-64's SSE2, aarch64's plain code, any other architecture).
    Scalar,
    /// aarch64's NEON, which every aarch64 CPU has.
    Neon,
    /// AVX2 with FMA (Intel since Haswell, AMD since Zen).
    Avx2,
    /// AVX-512F (Intel Skylake-SP and later servers, AMD Zen 4).
    Avx512,
}

impl Level {
    const ALL: [Level; 4] = [Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512];

    /// The name `RUNNER_CPU_FEATURES` takes.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Neon => "neon",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name.trim())
    }

    /// The widest level of this architecture's chain at most `self` (`avx2` asked on
    /// aarch64 is NEON, `neon` asked on x86-64 is scalar).
    fn on_this_architecture(self) -> Level {
        CHAIN
            .iter()
            .copied()
            .rfind(|l| *l <= self)
            .unwrap_or(Level::Scalar)
    }
}

/// This architecture's levels, narrowest first.
const CHAIN: &[Level] = if cfg!(target_arch = "aarch64") {
    &[Level::Scalar, Level::Neon]
} else {
    &[Level::Scalar, Level::Avx2, Level::Avx512]
};

/// What this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    if cfg!(target_arch = "aarch64") {
        Level::Neon
    } else {
        Level::Scalar
    }
}

/// The level the environment asks for, capped at what the CPU has (a level the CPU
/// lacks would crash on its first instruction); read once.
fn from_environment() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cpu = detected();
        match std::env::var("RUNNER_CPU_FEATURES") {
            Ok(text) if !text.is_empty() => match Level::from_name(&text) {
                Some(asked) => asked.on_this_architecture().min(cpu),
                None => {
                    // The binary refuses to start on this (`environment_error`); a
                    // program using the library gets the warning.
                    eprintln!("warning: {}", unknown_level(&text));
                    cpu
                }
            },
            _ => cpu,
        }
    })
}

/// Why `RUNNER_CPU_FEATURES` cannot be honoured, when it names no level: the binary
/// checks this before anything runs, since a typo would otherwise measure or test the
/// CPU's own path while the user believes another is forced.
pub fn environment_error() -> Option<String> {
    match std::env::var("RUNNER_CPU_FEATURES") {
        Ok(text) if !text.is_empty() && Level::from_name(&text).is_none() => {
            Some(unknown_level(&text))
        }
        _ => None,
    }
}

/// The message for a `RUNNER_CPU_FEATURES` that names no level.
fn unknown_level(text: &str) -> String {
    format!(
        "RUNNER_CPU_FEATURES={text} is not a level: use avx512, avx2, neon or scalar, or unset it for this CPU's own ({})",
        detected().name()
    )
}

/// A narrower level set by [`with_level`]: its position in [`Level::ALL`] plus one; 0
/// when none is.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The level every kernel uses now.
#[inline]
pub fn level() -> Level {
    let environment = from_environment();
    match FORCED.load(Ordering::Relaxed) {
        0 => environment,
        code => Level::ALL[code as usize - 1].min(environment),
    }
}

/// Whether the AVX-512 kernels run.
#[inline]
pub fn avx512() -> bool {
    level() >= Level::Avx512
}

/// Whether code compiled for AVX2 + FMA runs.
#[inline]
pub fn avx2() -> bool {
    level() >= Level::Avx2
}

/// Runs `body` with the kernels at most at `level`, process-wide (the equivalence tests
/// run each path the CPU has through the public entry points). Calls that overlap are
/// serialised; other threads see the narrower level meanwhile, which changes how fast
/// they run, never what they compute.
pub fn with_level<R>(level: Level, body: impl FnOnce() -> R) -> R {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // `Level::ALL` is in declaration order, so a level's position there is its discriminant.
    FORCED.store(level.on_this_architecture() as u8 + 1, Ordering::SeqCst);
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FORCED.store(0, Ordering::SeqCst);
        }
    }
    let _reset = Reset;
    body()
}

/// Every level this CPU runs, narrowest first.
pub fn levels() -> Vec<Level> {
    CHAIN.iter().copied().filter(|l| *l <= detected()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_level_is_capped_by_the_cpu_and_undone_afterwards() {
        let before = from_environment();
        assert!(before <= detected());
        for l in levels() {
            with_level(l, || {
                assert_eq!(level(), l.min(before));
                assert_eq!(avx512(), l.min(before) == Level::Avx512);
                assert_eq!(avx2(), l.min(before) >= Level::Avx2);
            });
        }
        // Undone: the widest level gives the environment's again.
        assert_eq!(with_level(Level::Avx512, level), before);
        assert_eq!(Level::from_name("avx2"), Some(Level::Avx2));
        assert_eq!(Level::from_name("neon"), Some(Level::Neon));
        assert_eq!(Level::from_name("sse4"), None);
    }

    /// A level of the other architecture stands for the widest of this one below it.
    #[test]
    fn a_level_of_another_architecture_is_never_in_use() {
        // `with_level` stores a level by its discriminant, read back through `ALL`.
        assert!(Level::ALL.iter().enumerate().all(|(i, l)| *l as usize == i));
        let here = levels();
        assert_eq!(here[0], Level::Scalar);
        assert!(here.iter().all(|l| l.on_this_architecture() == *l));
        for asked in Level::ALL {
            let used = with_level(asked, level);
            assert!(here.contains(&used), "{asked:?} gave {used:?}");
            assert!(used <= asked);
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(here, [Level::Scalar, Level::Neon]);
            assert_eq!(Level::Avx512.on_this_architecture(), Level::Neon);
        } else {
            assert!(!here.contains(&Level::Neon));
            assert_eq!(Level::Neon.on_this_architecture(), Level::Scalar);
            assert_eq!(Level::Avx2.on_this_architecture(), Level::Avx2);
        }
    }
}

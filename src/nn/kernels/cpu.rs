//! Which instruction set the kernels use: the widest this CPU has, or a narrower one
//! when `RUNNER_CPU_FEATURES` (`avx512`, `avx2`, `scalar`) asks, so that a machine with
//! AVX-512 can measure and test the paths other CPUs take. Every kernel asks here, never
//! the CPU directly.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// Instruction sets, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline code only (x86-64's SSE2, or any other architecture).
    Scalar,
    /// AVX2 with FMA (Intel since Haswell, AMD since Zen).
    Avx2,
    /// AVX-512F (Intel Skylake-SP and later servers, AMD Zen 4).
    Avx512,
}

impl Level {
    /// The name `RUNNER_CPU_FEATURES` takes.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn from_name(name: &str) -> Option<Level> {
        [Level::Scalar, Level::Avx2, Level::Avx512]
            .into_iter()
            .find(|l| l.name() == name.trim())
    }
}

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
    Level::Scalar
}

/// The level the environment asks for, capped at what the CPU has (a level the CPU
/// lacks would crash on its first instruction); read once.
fn from_environment() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cpu = detected();
        match std::env::var("RUNNER_CPU_FEATURES") {
            Ok(text) if !text.is_empty() => match Level::from_name(&text) {
                Some(asked) => asked.min(cpu),
                None => {
                    eprintln!(
                        "warning: RUNNER_CPU_FEATURES={text} is not avx512, avx2 or scalar; using {}",
                        cpu.name()
                    );
                    cpu
                }
            },
            _ => cpu,
        }
    })
}

/// A narrower level set by [`force`]; 0 when none is.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The level every kernel uses now.
#[inline]
pub fn level() -> Level {
    let environment = from_environment();
    match FORCED.load(Ordering::Relaxed) {
        1 => Level::Scalar.min(environment),
        2 => Level::Avx2.min(environment),
        _ => environment,
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
    let code = match level {
        Level::Scalar => 1,
        Level::Avx2 => 2,
        Level::Avx512 => 0,
    };
    FORCED.store(code, Ordering::SeqCst);
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
    [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|l| *l <= detected())
        .collect()
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
        assert_eq!(Level::from_name("neon"), None);
    }
}

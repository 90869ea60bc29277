//! Simulcast layer choice (docs/sfu.md, "Simulcast"), as pure functions of tile sizes,
//! measured layer bitrates, the subscriber's bandwidth estimate and time.

use std::time::{Duration, Instant};

use crate::Layer;

/// Tile height (device pixels) up to which `l` is enough.
pub const LOW_MAX_HEIGHT: u32 = 200;
/// Tile height up to which `m` is enough; taller tiles get `h`.
pub const MEDIUM_MAX_HEIGHT: u32 = 400;
/// Share of the bandwidth estimate that forwarded media may use.
pub const BUDGET_PERCENT: u64 = 90;
/// How long the estimate must have allowed an upgrade before it happens.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(3);
/// Bitrates assumed for a layer before it is measured: the web client's `maxBitrate`s.
pub const NOMINAL_BITRATE: [u64; 3] = [150_000, 500_000, 1_500_000];
/// Bitrate assumed for an audio track before it is measured.
pub const NOMINAL_AUDIO_BITRATE: u64 = 40_000;

/// The layer a tile calls for: height ≤ 200 → `l`, ≤ 400 → `m`, else `h`; `Paused` when
/// the tile has no area.
pub fn layer_for_tile(width: u32, height: u32) -> Layer {
    if width == 0 || height == 0 {
        Layer::Paused
    } else if height <= LOW_MAX_HEIGHT {
        Layer::Low
    } else if height <= MEDIUM_MAX_HEIGHT {
        Layer::Medium
    } else {
        Layer::High
    }
}

/// Index of a simulcast layer in `[low, medium, high]` arrays.
pub fn layer_index(layer: Layer) -> Option<usize> {
    match layer {
        Layer::Low => Some(0),
        Layer::Medium => Some(1),
        Layer::High => Some(2),
        Layer::Paused | Layer::Single => None,
    }
}

const BY_INDEX: [Layer; 3] = [Layer::Low, Layer::Medium, Layer::High];

/// One simulcast subscription's input to [`allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// Tile area in device pixels: larger tiles keep their layer longest.
    pub area: u64,
    /// What the tile calls for ([`layer_for_tile`]): `Low`, `Medium`, `High` or `Paused`.
    pub wanted: Layer,
    /// Bitrate of the low, medium and high layer when the publisher sends it (`None`: the
    /// layer is not available).
    pub available: [Option<u64>; 3],
}

/// [`allocate`]'s decision for one [`Demand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The layer to forward.
    pub layer: Layer,
    /// Whether the bandwidth estimate (not the tile) made it lower than wanted.
    pub limited: bool,
}

/// Picks a layer per demand: the best available layer not above what the tile wants, then,
/// while the sum of the chosen bitrates plus `fixed` (audio and non-simulcast video) is over
/// 90 % of `estimate`, steps down the smallest tile that can still go lower.
pub fn allocate(estimate: u64, fixed: u64, demands: &[Demand]) -> Vec<Choice> {
    let mut chosen: Vec<Option<usize>> = demands.iter().map(preferred_index).collect();
    let mut limited = vec![false; demands.len()];
    let budget = estimate.saturating_mul(BUDGET_PERCENT) / 100;
    let rate = |d: &Demand, i: usize| d.available[i].unwrap_or(0);
    let mut total: u64 = fixed
        + demands
            .iter()
            .zip(&chosen)
            .filter_map(|(d, c)| c.map(|i| rate(d, i)))
            .sum::<u64>();
    while total > budget {
        // The smallest tile that still has a lower available layer; on equal areas the
        // later one (the runtime lists tiles largest first).
        let victim = demands
            .iter()
            .enumerate()
            .filter_map(|(n, d)| {
                let cur = chosen[n]?;
                let lower = (0..cur).rev().find(|&i| d.available[i].is_some())?;
                Some((d.area, n, cur, lower))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let Some((_, n, cur, lower)) = victim else {
            break;
        };
        total = total - rate(&demands[n], cur) + rate(&demands[n], lower);
        chosen[n] = Some(lower);
        limited[n] = true;
    }
    chosen
        .iter()
        .zip(demands)
        .zip(limited)
        .map(|((c, d), limited)| Choice {
            layer: match c {
                Some(i) => BY_INDEX[*i],
                None if d.wanted == Layer::Paused => Layer::Paused,
                // Nothing available yet: keep asking for what the tile wants.
                None => d.wanted,
            },
            limited,
        })
        .collect()
}

/// The layer a demand gets with bandwidth to spare: the best available one not above
/// what the tile wants, else the lowest available; `None` when paused or nothing is.
fn preferred_index(d: &Demand) -> Option<usize> {
    let wanted = layer_index(d.wanted)?;
    (0..=wanted)
        .rev()
        .find(|&i| d.available[i].is_some())
        .or_else(|| (0..3).find(|&i| d.available[i].is_some()))
}

/// The bitrate of [`preferred_index`]'s layer (0 when there is none): what the
/// subscriber would receive of this demand with bandwidth to spare.
pub fn preferred_rate(d: &Demand) -> u64 {
    preferred_index(d).and_then(|i| d.available[i]).unwrap_or(0)
}

/// Upgrade hysteresis: downgrades apply at once, and so does starting a paused
/// subscription; an upgrade of a flowing layer waits until the bandwidth estimate has not
/// limited this subscription for [`UPGRADE_HOLD`]. `limited_at` is the subscription's
/// memory of the last time it was limited.
pub fn next_target(
    current: Layer,
    choice: Choice,
    limited_at: &mut Option<Instant>,
    now: Instant,
) -> Layer {
    if choice.limited {
        *limited_at = Some(now);
    }
    if choice.layer.rank() <= current.rank() || current == Layer::Paused {
        return choice.layer;
    }
    match limited_at {
        Some(t) if now.saturating_duration_since(*t) < UPGRADE_HOLD => current,
        _ => choice.layer,
    }
}

/// Bitrate of one incoming layer, measured over windows of about one second.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    rate: Option<u64>,
    last: Option<Instant>,
}

/// Length of one measuring window.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A layer not seen for this long is considered not sent.
pub const LAYER_STALE: Duration = Duration::from_secs(2);

impl RateMeter {
    /// Count `bytes` received at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            self.rate = Some(self.bytes.saturating_mul(8_000_000) / micros);
            self.window_start = Some(now);
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(bytes as u64);
        self.last = Some(now);
    }

    /// The last full window's bitrate (bit/s), `None` before one completed.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Whether data arrived within [`LAYER_STALE`].
    pub fn active(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_STALE)
    }

    /// When data last arrived.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// Whether anything was ever received.
    pub fn seen(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(rates: [u64; 3]) -> [Option<u64>; 3] {
        rates.map(Some)
    }

    #[test]
    fn tile_thresholds() {
        assert_eq!(layer_for_tile(320, 180), Layer::Low);
        assert_eq!(layer_for_tile(356, 200), Layer::Low);
        assert_eq!(layer_for_tile(356, 201), Layer::Medium);
        assert_eq!(layer_for_tile(640, 400), Layer::Medium);
        assert_eq!(layer_for_tile(1280, 720), Layer::High);
        assert_eq!(layer_for_tile(0, 720), Layer::Paused);
        assert_eq!(layer_for_tile(1280, 0), Layer::Paused);
    }

    #[test]
    fn plenty_of_bandwidth_gives_the_tile_layer() {
        let d = [
            Demand {
                area: 1280 * 720,
                wanted: Layer::High,
                available: all(NOMINAL_BITRATE),
            },
            Demand {
                area: 320 * 180,
                wanted: Layer::Low,
                available: all(NOMINAL_BITRATE),
            },
            Demand {
                area: 0,
                wanted: Layer::Paused,
                available: all(NOMINAL_BITRATE),
            },
        ];
        let c = allocate(10_000_000, 40_000, &d);
        assert_eq!(
            c.iter().map(|c| c.layer).collect::<Vec<_>>(),
            [Layer::High, Layer::Low, Layer::Paused]
        );
        assert!(c.iter().all(|c| !c.limited));
    }

    #[test]
    fn tiny_estimate_forces_low_and_smallest_tile_goes_first() {
        let d = [
            Demand {
                area: 1280 * 720,
                wanted: Layer::High,
                available: all(NOMINAL_BITRATE),
            },
            Demand {
                area: 640 * 360,
                wanted: Layer::High,
                available: all(NOMINAL_BITRATE),
            },
        ];
        // 90 % of 2.2 M = 1.98 M: h + m (2.0 M) does not fit, h + l (1.65 M) does.
        let c = allocate(2_200_000, 0, &d);
        assert_eq!(
            c[0],
            Choice {
                layer: Layer::High,
                limited: false
            }
        );
        assert_eq!(
            c[1],
            Choice {
                layer: Layer::Low,
                limited: true
            }
        );
        // A tiny estimate: everything at the lowest layer, never paused.
        let c = allocate(100_000, 40_000, &d);
        assert_eq!(
            c.iter().map(|c| c.layer).collect::<Vec<_>>(),
            [Layer::Low, Layer::Low]
        );
        assert!(c.iter().all(|c| c.limited));
    }

    #[test]
    fn audio_counts_first() {
        let d = [Demand {
            area: 1,
            wanted: Layer::Medium,
            available: all([100_000, 500_000, 1_500_000]),
        }];
        assert_eq!(allocate(1_000_000, 0, &d)[0].layer, Layer::Medium);
        // 90 % of 1 M minus 500 k of audio leaves 400 k: m no longer fits.
        assert_eq!(allocate(1_000_000, 500_000, &d)[0].layer, Layer::Low);
    }

    #[test]
    fn missing_layers_fall_back() {
        // The publisher sends only l and m: a large tile gets m.
        let d = [Demand {
            area: 1,
            wanted: Layer::High,
            available: [Some(100), Some(200), None],
        }];
        assert_eq!(allocate(u64::MAX / 200, 0, &d)[0].layer, Layer::Medium);
        // Only h is sent: a small tile still gets something.
        let d = [Demand {
            area: 1,
            wanted: Layer::Low,
            available: [None, None, Some(200)],
        }];
        assert_eq!(allocate(1_000_000, 0, &d)[0].layer, Layer::High);
        // Nothing sent yet: ask for what the tile wants.
        let d = [Demand {
            area: 1,
            wanted: Layer::Medium,
            available: [None; 3],
        }];
        assert_eq!(allocate(1_000_000, 0, &d)[0].layer, Layer::Medium);
    }

    #[test]
    fn upgrades_wait_three_seconds_downgrades_do_not() {
        let t0 = Instant::now();
        let mut limited = None;
        let down = Choice {
            layer: Layer::Low,
            limited: true,
        };
        assert_eq!(next_target(Layer::High, down, &mut limited, t0), Layer::Low);
        let up = Choice {
            layer: Layer::High,
            limited: false,
        };
        assert_eq!(
            next_target(Layer::Low, up, &mut limited, t0 + Duration::from_secs(1)),
            Layer::Low
        );
        assert_eq!(
            next_target(
                Layer::Low,
                up,
                &mut limited,
                t0 + Duration::from_millis(2900)
            ),
            Layer::Low
        );
        assert_eq!(
            next_target(Layer::Low, up, &mut limited, t0 + Duration::from_secs(3)),
            Layer::High
        );
        // A tile growing with no bandwidth limit in memory upgrades at once.
        let mut never = None;
        assert_eq!(next_target(Layer::Low, up, &mut never, t0), Layer::High);
        assert_eq!(next_target(Layer::Paused, up, &mut never, t0), Layer::High);
        // Un-pausing is immediate even when the estimate caps the layer.
        let mut recent = Some(t0);
        let capped = Choice {
            layer: Layer::Medium,
            limited: true,
        };
        assert_eq!(
            next_target(Layer::Paused, capped, &mut recent, t0),
            Layer::Medium
        );
        let pause = Choice {
            layer: Layer::Paused,
            limited: false,
        };
        assert_eq!(
            next_target(Layer::High, pause, &mut never, t0),
            Layer::Paused
        );
    }

    #[test]
    fn rate_meter_measures_one_second_windows() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.rate(), None);
        for i in 0..=31 {
            m.add(t0 + Duration::from_millis(i * 33 + 1), 1000);
        }
        let bits = m.rate().unwrap();
        // 31 frames of 1000 bytes in 1.023 s: ~242 kbit/s.
        assert!((230_000..=250_000).contains(&bits), "{bits}");
        assert!(m.active(t0 + Duration::from_secs(2)));
        assert!(!m.active(t0 + Duration::from_secs(4)));
    }
}

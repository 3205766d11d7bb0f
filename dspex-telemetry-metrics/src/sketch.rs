//! The log-bucketed, relative-error mapping behind the window (as DDSketch): every value in a
//! bucket is within `relative_accuracy` of the bucket's representative value.

/// Maps values to buckets `1..=len` by `ceil(ln(x) / ln(γ))`, with γ = (1+α)/(1−α); bucket 0
/// holds zero and negative values. Values outside `[min, max]` fall in the edge buckets (the
/// window's exact min and max keep estimates there honest).
///
/// No logarithm is taken per value: the value's exponent and top mantissa bits index a table
/// giving the bucket of the lowest value with those bits. Such a slice of values is narrower
/// than a bucket, so the true bucket is that one or the next; where a bucket ends inside the
/// slice, the entry also holds the low bits of that bucket's upper bound, and one integer
/// comparison of the value's low bits tells the two apart (one table load per value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogMapping {
    gamma: f64,
    inv_ln_gamma: f64,
    /// Index of the bucket just below the first one.
    offset: i64,
    len: usize,
    lookup: Lookup,
}

/// Mantissa bits that index the table: slices of 2^-7 relative width (0.78 %), narrower than
/// any bucket this mapping is built with (γ − 1 ≥ 2 α).
const TABLE_BITS: u32 = 7;
const KEY_SHIFT: u32 = 52 - TABLE_BITS;

/// The low bits of a value, below its key.
const LOW_MASK: u64 = (1 << KEY_SHIFT) - 1;
/// Where an entry keeps its bucket.
const BUCKET_SHIFT: u32 = 48;

#[derive(Debug, Clone, PartialEq)]
struct Lookup {
    /// The key (`bits >> KEY_SHIFT`) of the first table entry.
    first_key: u64,
    /// Per key from `first_key`: the bucket `b` of the lowest value with that key, shifted by
    /// `BUCKET_SHIFT`, and in the low bits the low bits of `b`'s upper bound if that bound has
    /// this key (values with greater low bits are in `b + 1`), else `LOW_MASK` (none are).
    entries: Box<[u64]>,
}

impl LogMapping {
    /// A mapping within `relative_accuracy` (at most 0.5 %… 49 %: γ − 1 must exceed the table's
    /// slice width) for values in `[min, max]`.
    pub(crate) fn new(relative_accuracy: f64, min: f64, max: f64) -> Self {
        let gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy);
        let inv_ln_gamma = 1.0 / gamma.ln();
        let first = (min.ln() * inv_ln_gamma).ceil() as i64;
        let last = (max.ln() * inv_ln_gamma).ceil() as i64;
        let len = usize::try_from(last - first + 1).unwrap_or(1).max(1);
        let offset = first - 1;
        let mut upper: Vec<f64> = (0..=len)
            .map(|i| gamma.powi((i as i64 + offset) as i32))
            .collect();
        upper[len] = f64::INFINITY;
        // Bucket 0 is for values ≤ 0 only; positive values below the first bound go to bucket 1.
        upper[0] = 0.0;
        let bucket_of = |x: f64| -> u16 {
            // The first bucket whose upper bound is ≥ x (bucket 1 at least).
            let i = upper[1..].partition_point(|&u| u < x) + 1;
            i.min(len) as u16
        };
        let first_key = min.to_bits() >> KEY_SHIFT;
        let last_key = max.to_bits() >> KEY_SHIFT;
        let entries = (first_key..=last_key)
            .map(|key| {
                let b = bucket_of(f64::from_bits(key << KEY_SHIFT));
                let bound = upper[usize::from(b)].to_bits();
                let low = if bound >> KEY_SHIFT == key {
                    bound & LOW_MASK
                } else {
                    LOW_MASK
                };
                (u64::from(b) << BUCKET_SHIFT) | low
            })
            .collect();
        LogMapping {
            gamma,
            inv_ln_gamma,
            offset,
            len,
            lookup: Lookup { first_key, entries },
        }
    }

    /// Buckets, not counting the zero bucket.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bucket of `value`: 0 for zero, negative or NaN values, else `1..=len`.
    #[inline]
    pub(crate) fn index(&self, value: f64) -> usize {
        if value.is_nan() || value <= 0.0 {
            return 0;
        }
        let bits = value.to_bits();
        let key = (bits >> KEY_SHIFT).wrapping_sub(self.lookup.first_key);
        match self.lookup.entries.get(key as usize) {
            Some(&entry) => {
                let b = (entry >> BUCKET_SHIFT) as usize;
                b + usize::from(bits & LOW_MASK > entry & LOW_MASK)
            }
            // Below the table's first key the subtraction wrapped: smaller than `min`.
            None if bits >> KEY_SHIFT < self.lookup.first_key => 1,
            None => self.len,
        }
    }

    /// The bucket of `value` by the logarithm itself: the definition `index` is checked against.
    #[cfg(test)]
    fn index_by_log(&self, value: f64) -> usize {
        if value.is_nan() || value <= 0.0 {
            return 0;
        }
        let i = (value.ln() * self.inv_ln_gamma).ceil() as i64 - self.offset;
        i.clamp(1, self.len as i64) as usize
    }

    /// The representative value of bucket `index`: within α of every value the bucket holds.
    pub(crate) fn value(&self, index: usize) -> f64 {
        if index == 0 {
            return 0.0;
        }
        let upper = self.gamma.powi((index as i64 + self.offset) as i32);
        2.0 * upper / (self.gamma + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representatives_are_within_the_relative_accuracy() {
        let m = LogMapping::new(0.0099, 1e-3, 1e6);
        let mut x = 1e-3;
        while x < 1e6 {
            let v = m.value(m.index(x));
            assert!(((v - x) / x).abs() <= 0.0099 + 1e-12, "x={x} v={v}");
            x *= 1.0037;
        }
        assert_eq!(m.index(0.0), 0);
        assert_eq!(m.index(-5.0), 0);
        assert_eq!(m.index(f64::NAN), 0);
        assert_eq!(m.index(1e12), m.len());
        assert_eq!(m.index(1e-9), 1);
        assert_eq!(m.index(f64::INFINITY), m.len());
        assert_eq!(m.index(f64::MIN_POSITIVE / 2.0), 1);
    }

    #[test]
    fn the_table_gives_the_logarithms_bucket() {
        for (alpha, min, max) in [(0.0099, 1e-3, 1e6), (0.05, 1e-9, 1e12), (0.005, 0.5, 2.0)] {
            let m = LogMapping::new(alpha, min, max);
            let mut x = min / 10.0;
            let mut differ = 0;
            while x < max * 10.0 {
                let (fast, exact) = (m.index(x), m.index_by_log(x));
                if fast != exact {
                    // Only where the logarithm's own rounding puts x on a bucket boundary.
                    assert_eq!(fast.abs_diff(exact), 1, "alpha={alpha} x={x}");
                    let bound = m.gamma.powi((fast.min(exact) as i64 + m.offset) as i32);
                    assert!(((x - bound) / bound).abs() < 1e-12, "alpha={alpha} x={x}");
                    differ += 1;
                }
                x *= 1.000_37;
            }
            assert!(differ < 10, "{differ} values differ");
        }
    }
}

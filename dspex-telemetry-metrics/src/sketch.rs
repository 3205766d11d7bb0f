//! The log-bucketed, relative-error mapping behind the window (as DDSketch): every value in a
//! bucket is within `relative_accuracy` of the bucket's representative value.

/// Maps values to buckets `1..=len` by `ceil(ln(x) / ln(γ))`, with γ = (1+α)/(1−α); bucket 0
/// holds zero and negative values. Values outside `[min, max]` fall in the edge buckets (the
/// window's exact min and max keep estimates there honest).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogMapping {
    gamma: f64,
    inv_ln_gamma: f64,
    /// Index of the bucket just below the first one.
    offset: i64,
    len: usize,
}

impl LogMapping {
    pub(crate) fn new(relative_accuracy: f64, min: f64, max: f64) -> Self {
        let gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy);
        let inv_ln_gamma = 1.0 / gamma.ln();
        let first = (min.ln() * inv_ln_gamma).ceil() as i64;
        let last = (max.ln() * inv_ln_gamma).ceil() as i64;
        LogMapping {
            gamma,
            inv_ln_gamma,
            offset: first - 1,
            len: usize::try_from(last - first + 1).unwrap_or(1).max(1),
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
    }
}

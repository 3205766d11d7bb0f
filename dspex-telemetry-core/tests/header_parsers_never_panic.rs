//! Property tests: `traceparent` and `baggage` round-trip, and arbitrary input never panics
//! their parsers.

use dspex_telemetry_core::{Baggage, CorrelationId, SpanId, TraceFlags, TraceId, TraceParent};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}"
}

proptest! {
    #[test]
    fn traceparent_round_trips(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), flags in any::<u8>()) {
        prop_assume!(trace != [0; 16] && span != [0; 8]);
        let tp = TraceParent {
            trace_id: TraceId::from_bytes(trace),
            parent_id: SpanId::from_bytes(span),
            flags: TraceFlags::from_bits(flags),
        };
        prop_assert_eq!(TraceParent::parse(&tp.to_string()), Ok(tp));
    }

    #[test]
    fn traceparent_parser_never_panics(input in ".{0,80}") {
        let _ = TraceParent::parse(&input);
    }

    #[test]
    fn traceparent_parser_never_panics_on_near_misses(
        input in "[0-9a-fA-F-]{50,60}"
    ) {
        if let Ok(tp) = TraceParent::parse(&input) {
            prop_assert_eq!(tp.to_string().len(), 55);
        }
    }

    #[test]
    fn baggage_round_trips(entries in proptest::collection::btree_map(token(), any::<String>(), 0..20)) {
        let mut baggage = Baggage::new();
        for (k, v) in &entries {
            baggage.insert(k, v).unwrap();
        }
        let parsed = Baggage::parse(&baggage.to_header());
        if entries.is_empty() {
            prop_assert!(parsed.is_err(), "an empty header is not a baggage");
        } else {
            let parsed = parsed.unwrap();
            prop_assert_eq!(&parsed, &baggage);
            for (k, v) in &entries {
                prop_assert_eq!(parsed.get(k), Some(v.as_str()));
            }
        }
    }

    #[test]
    fn baggage_parser_never_panics(input in ".{0,300}") {
        if let Ok(b) = Baggage::parse(&input) {
            prop_assert!(b.len() <= dspex_telemetry_core::BAGGAGE_MAX_MEMBERS);
        }
    }

    #[test]
    fn baggage_parser_never_panics_on_baggage_like_input(input in "[a-z=,;% 0-9A-F\"\\\\]{0,200}") {
        let _ = Baggage::parse(&input);
    }

    #[test]
    fn correlation_ids_are_kept_verbatim_or_refused(input in ".{0,140}") {
        match CorrelationId::parse(&input) {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), input.as_str());
                prop_assert!(input.bytes().all(|b| (b'!'..=b'~').contains(&b)));
            }
            Err(_) => prop_assert!(input.is_empty() || input.len() > 128 || input.bytes().any(|b| !(b'!'..=b'~').contains(&b))),
        }
    }
}

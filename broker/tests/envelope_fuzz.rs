//! Fuzzes [`Envelope::decode`] with random bytes and with mutated valid JSON and bincode
//! envelopes (proptest, a bounded number of cases so it runs in seconds under `cargo test`).
//! `allocation-counter`, a counting global allocator linked into this test binary only,
//! measures what the decoder allocates on the test's thread: hostile input must end in `Err`,
//! never in a panic, an abort, or allocations out of proportion to the body.

use allocation_counter::AllocationInfo;
use bulwark_broker::{CONTENT_TYPE_BINCODE, CONTENT_TYPE_JSON, Envelope};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Decodes `body` as `content_type` with this thread's allocations measured; returns whether
/// it decoded.
fn decode_counted(content_type_opt: Option<&str>, body: &[u8]) -> (bool, AllocationInfo) {
    let mut is_ok = false;
    let allocated = allocation_counter::measure(|| {
        is_ok = Envelope::decode(content_type_opt, body).is_ok();
    });
    (is_ok, allocated)
}

/// The most a decode may hold at once for a body of `num_bytes` (its peak, which bounds its
/// largest single allocation), and twice that in all: linear in the body. A JSON array costs one 32-byte `Value` per element of at least two bytes
/// (doubled by a `Vec`'s growth), hence 64 per byte; the constant covers error messages and
/// small maps. A length prefix that claims more than the body holds must never count.
fn allowed_bytes(num_bytes: usize) -> u64 {
    64 * num_bytes as u64 + 16 * 1024
}

fn assert_proportionate(content_type_opt: Option<&str>, body: &[u8]) -> AllocationInfo {
    let (_, allocated) = decode_counted(content_type_opt, body);
    let allowed = allowed_bytes(body.len());
    assert!(
        allocated.bytes_max <= allowed && allocated.bytes_total <= 2 * allowed,
        "decoding {} bytes as {content_type_opt:?} allocated {allocated:?}, allowed {allowed}",
        body.len()
    );
    allocated
}

/// The bincode bomb of issue #13: version 1, then a first string (`id`) whose varint length
/// (0xfd: a u64 follows) claims 2^40 bytes. 10 bytes in all.
fn bincode_bomb() -> Vec<u8> {
    let mut bomb = vec![0x01, 0xfd];
    bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
    bomb
}

/// Proves the exact 10-byte bomb that aborted a node (1 TiB allocation) is refused as
/// malformed, allocating no more than a small constant.
#[test]
fn the_bincode_length_bomb_is_refused_without_allocating_it() {
    let bomb = bincode_bomb();
    assert_eq!(bomb.len(), 10);
    let error = Envelope::decode(Some(CONTENT_TYPE_BINCODE), &bomb).unwrap_err();
    assert!(error.0.starts_with("malformed bincode envelope"), "{error}");
    let allocated = assert_proportionate(Some(CONTENT_TYPE_BINCODE), &bomb);
    assert!(allocated.bytes_max < 4096, "{allocated:?}");
}

/// Proves length claims placed in every field of a valid bincode envelope (u32 and u64
/// varints up to their maximum) are refused without allocating what they claim.
#[test]
fn length_claims_in_every_field_are_refused_cheaply() {
    let valid = sample(&"x".repeat(8), "k", &json!({"a": 1})).encode(CONTENT_TYPE_BINCODE);
    let valid = valid.expect("encodes");
    for position in 0..valid.len() {
        for claim in [u64::MAX, 1 << 40, 1 << 32, u64::from(u32::MAX)] {
            let mut body = valid[..position].to_vec();
            body.push(0xfd);
            body.extend_from_slice(&claim.to_le_bytes());
            body.extend_from_slice(&valid[position..]);
            let (is_ok, _) = decode_counted(Some(CONTENT_TYPE_BINCODE), &body);
            assert!(!is_ok, "claim {claim} at {position} accepted");
            assert_proportionate(Some(CONTENT_TYPE_BINCODE), &body);
        }
    }
}

fn sample(id: &str, kind: &str, payload: &Value) -> Envelope {
    Envelope {
        v: 1,
        id: id.to_owned(),
        kind: kind.to_owned(),
        payload: payload.clone(),
        idempotency_key: Some(format!("key-{id}")),
        deadline: Some("2030-01-01T00:00:00Z".to_owned()),
        priority: None,
        run_at: None,
        timeout_ms: None,
    }
}

/// Small JSON payloads of every shape.
fn payload_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|number| json!(number)),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(|number| json!(number)),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A valid envelope, encoded as JSON or bincode.
fn valid_body_strategy() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let content_type = prop_oneof![Just(CONTENT_TYPE_JSON), Just(CONTENT_TYPE_BINCODE)];
    (
        content_type,
        "[a-z0-9-]{1,20}",
        "[a-z.]{1,20}",
        payload_strategy(),
    )
        .prop_map(|(content_type, id, kind, payload)| {
            let body = sample(&id, &kind, &payload)
                .encode(content_type)
                .expect("a valid envelope encodes");
            (content_type, body)
        })
}

/// One change to a body: what random corruption and a hostile producer would do.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// A varint length marker (0xfb: u16, 0xfc: u32, 0xfd: u64) and a claim, written over.
    LengthClaim {
        at: usize,
        marker: u8,
        claim: u64,
    },
    DuplicateTail {
        at: usize,
    },
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>().prop_map(|index| index.index(usize::MAX));
    prop_oneof![
        (at.clone(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at.clone(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        at.clone().prop_map(|at| Mutation::Truncate { at }),
        (
            at.clone(),
            prop_oneof![Just(0xfbu8), Just(0xfc), Just(0xfd)],
            any::<u64>()
        )
            .prop_map(|(at, marker, claim)| Mutation::LengthClaim { at, marker, claim }),
        at.prop_map(|at| Mutation::DuplicateTail { at }),
    ]
}

fn mutate(body: &mut Vec<u8>, mutation: &Mutation) {
    let position = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
    match mutation {
        Mutation::Flip { at, mask } => {
            if !body.is_empty() {
                let index = at % body.len();
                body[index] ^= mask;
            }
        }
        Mutation::Insert { at, bytes } => {
            let index = position(*at, body.len());
            body.splice(index..index, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let start = position(*at, body.len());
            let end = (start + len).min(body.len());
            body.drain(start..end);
        }
        Mutation::Truncate { at } => {
            let len = position(*at, body.len());
            body.truncate(len);
        }
        Mutation::LengthClaim { at, marker, claim } => {
            let index = position(*at, body.len());
            let mut claimed = vec![*marker];
            claimed.extend_from_slice(&claim.to_le_bytes());
            let end = (index + claimed.len()).min(body.len());
            body.splice(index..end, claimed);
        }
        Mutation::DuplicateTail { at } => {
            let index = position(*at, body.len());
            let tail = body[index..].to_vec();
            body.extend_from_slice(&tail);
        }
    }
}

fn content_type_strategy() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some(CONTENT_TYPE_JSON)),
        Just(Some(CONTENT_TYPE_BINCODE)),
        Just(Some("text/plain")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Proves random bytes of any content type never panic and never allocate out of
    /// proportion to their length.
    #[test]
    fn random_bytes_never_panic_nor_overallocate(
        content_type in content_type_strategy(),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        assert_proportionate(content_type, &body);
    }

    /// Proves valid JSON and bincode envelopes still decode, and that up to four mutations of
    /// them (flips, inserts, removals, truncation, planted length claims) never panic and
    /// never allocate out of proportion to the mutated body.
    #[test]
    fn mutated_envelopes_never_panic_nor_overallocate(
        (content_type, valid) in valid_body_strategy(),
        mutations in prop::collection::vec(mutation_strategy(), 1..4),
    ) {
        let (is_ok, allocated) = decode_counted(Some(content_type), &valid);
        prop_assert!(is_ok, "a valid {content_type} envelope decodes");
        // The counter is live: a decoded envelope owns its strings.
        prop_assert!(allocated.bytes_total > 0, "{allocated:?}");
        let mut body = valid;
        for mutation in &mutations {
            mutate(&mut body, mutation);
        }
        assert_proportionate(Some(content_type), &body);
    }
}

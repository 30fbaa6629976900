//! Unit tests of the Slack actor's pacing and backoff (the queue behaviour is tested end to end
//! in `tests/it/delivery.rs`).

use super::*;

#[test]
fn pacer_allows_a_burst_then_one_per_interval() {
    let start = Instant::now();
    let mut pacer = Pacer::new(3, Duration::from_secs(1));
    pacer.updated = start;
    for _ in 0..3 {
        assert_eq!(pacer.try_take(start), Ok(()));
    }
    let wait = pacer.try_take(start).unwrap_err();
    assert!((Duration::from_millis(990)..=Duration::from_secs(1)).contains(&wait));
    let later = start + Duration::from_millis(500);
    let wait = pacer.try_take(later).unwrap_err();
    assert!((Duration::from_millis(490)..=Duration::from_millis(510)).contains(&wait));
    assert_eq!(pacer.try_take(start + Duration::from_secs(1)), Ok(()));
    assert!(pacer.try_take(start + Duration::from_secs(1)).is_err());
    // Idle time refills up to the burst, not beyond.
    let much_later = start + Duration::from_secs(60);
    for _ in 0..3 {
        assert_eq!(pacer.try_take(much_later), Ok(()));
    }
    assert!(pacer.try_take(much_later).is_err());
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let config = DeliveryConfig::default();
    for _ in 0..50 {
        let first = backoff(&config, 0);
        assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&first));
        let third = backoff(&config, 2);
        assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&third));
        let late = backoff(&config, 30);
        assert!((Duration::from_secs(30)..=Duration::from_secs(60)).contains(&late));
    }
}

#[test]
fn payload_hashes_are_stable() {
    let a = serde_json::json!({"text": "x"});
    assert_eq!(payload_hash(&a), payload_hash(&a.clone()));
    assert_ne!(
        payload_hash(&a),
        payload_hash(&serde_json::json!({"text": "y"}))
    );
    assert_eq!(payload_hash(&a).len(), 16);
}

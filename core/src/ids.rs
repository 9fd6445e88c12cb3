//! Random identifiers: room and event localparts, device IDs, session IDs.

/// Random `[A-Za-z]` characters, for room IDs and device IDs.
pub fn random_localpart(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| {
            let i = rng.gen_range(0..52u8);
            char::from(if i < 26 { b'A' + i } else { b'a' + i - 26 })
        })
        .collect()
}

/// A new device ID: ten capital letters, as Synapse makes them.
pub fn random_device_id() -> String {
    random_localpart(10).to_uppercase()
}

//! Media type detection of uploads (media/detect.rs): magic numbers, ZIP directories and
//! local headers, OOXML content types, OLE2 directory entries, UTF-8 text.
//!
//! Input: one byte that seeds the chunk sizes, then the file. An upload arrives in chunks
//! of whatever sizes the network made (`MediaService::upload` feeds each to the
//! `Sniffer`, then `finish` reads the stored file).
//!
//! Properties: the type does not depend on how the upload was chunked; `finish` does not
//! fail on a complete file (the upload handler turns its error into a 500).
#![no_main]

use std::io::Cursor;

use kairan_homeserver::media::detect::{Sniffer, detect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, file)) = data.split_first() else { return };
    let whole = detect(file);

    let mut sniffer = Sniffer::new();
    // A small xorshift over the seed: chunks of 1 to 64 bytes, different for each seed.
    let mut state = u32::from(seed) | 0x100;
    let mut rest = file;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 64 + 1) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        sniffer.feed(chunk);
        rest = tail;
    }
    let streamed = sniffer
        .finish(&mut Cursor::new(file))
        .unwrap_or_else(|e| panic!("detection fails on a complete file (an upload would get a 500): {e}"));
    assert_eq!(streamed, whole, "the type depends on how the upload was chunked");
});

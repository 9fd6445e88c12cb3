//! Paginating 1,000 events both ways returns each event exactly once, in order.

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer};
use matrix_sdk::{
    room::MessagesOptions,
    ruma::{
        UInt,
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
    },
};
use serde_json::Value;

use crate::support::{ensure_unique, event_json, ids, paginate};

const COUNT: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_events_both_ways() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.client("alice", PASSWORD).await?;
    let api = server.api("alice", PASSWORD).await?;

    let mut request = CreateRoomRequest::new();
    request.name = Some("Archive".to_owned());
    request.preset = Some(RoomPreset::PrivateChat);
    let room = alice.create_room(request).await?;
    let rid = room.room_id().as_str().to_owned();

    let mut sent = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let event_id =
            api.send_text_ok(&rid, &format!("page-{i}"), &i.to_string()).await.with_context(|| format!("send {i}"))?;
        sent.push(event_id);
    }

    // Backwards from the end with matrix-sdk (as a client's "load more" does), 37 at a time
    // so that page boundaries fall everywhere.
    let mut backward: Vec<Value> = Vec::new();
    let mut from: Option<String> = None;
    for page in 0.. {
        ensure!(page < 1000, "backward pagination did not end");
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = UInt::from(37u32);
        let messages = room.messages(options).await.context("GET /messages dir=b")?;
        ensure!(messages.chunk.len() <= 37, "{} events for limit 37", messages.chunk.len());
        for event in &messages.chunk {
            backward.push(event_json(event)?);
        }
        match messages.end {
            Some(end) => {
                ensure!(!messages.chunk.is_empty() || from.as_ref() != Some(&end), "empty page with end == from");
                from = Some(end);
            }
            None => break,
        }
    }
    ensure_unique(&backward).context("backward pagination")?;
    check_messages(&backward, sent.iter().rev().cloned().collect(), (0..COUNT).rev().collect()).context("backward")?;
    ensure!(
        backward.last().map(|e| e["type"].clone()) == Some("m.room.create".into()),
        "backward pagination does not end at m.room.create"
    );

    // Forwards from the start with raw HTTP, 41 at a time.
    let forward = paginate(&api, &rid, "f", 41).await?;
    ensure_unique(&forward).context("forward pagination")?;
    check_messages(&forward, sent.clone(), (0..COUNT).collect()).context("forward")?;
    ensure!(
        forward.first().map(|e| e["type"].clone()) == Some("m.room.create".into()),
        "forward pagination does not start at m.room.create"
    );

    // Both directions see the same timeline, mirrored.
    let mut mirrored = ids(&backward);
    mirrored.reverse();
    ensure!(ids(&forward) == mirrored, "forward and backward pagination disagree on the timeline");
    Ok(())
}

/// The `m.room.message` events are exactly `expected_ids`, with bodies `expected_bodies`.
fn check_messages(events: &[Value], expected_ids: Vec<String>, expected_bodies: Vec<usize>) -> anyhow::Result<()> {
    let messages: Vec<&Value> = events.iter().filter(|e| e["type"] == "m.room.message").collect();
    let bodies: Vec<String> =
        messages.iter().map(|e| e["content"]["body"].as_str().unwrap_or("?").to_owned()).collect();
    let expected: Vec<String> = expected_bodies.iter().map(usize::to_string).collect();
    if bodies != expected {
        let first_diff = bodies.iter().zip(&expected).position(|(a, b)| a != b);
        anyhow::bail!(
            "got {} messages, expected {}; first difference at index {first_diff:?}",
            bodies.len(),
            expected.len()
        );
    }
    let got_ids: Vec<String> = messages.iter().map(|e| e["event_id"].as_str().unwrap_or("?").to_owned()).collect();
    ensure!(got_ids == expected_ids, "the event IDs differ from those the sends returned");
    Ok(())
}

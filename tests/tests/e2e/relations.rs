//! Edits (m.replace), reactions (m.annotation), threads (m.thread) and redactions reach a
//! matrix-sdk client in the shape ruma/matrix-sdk parse, through sync, `/relations`,
//! `/threads`, `/event` and `/messages`.

use std::collections::HashSet;

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer};
use matrix_sdk::{
    room::{IncludeRelations, ListThreadsOptions, MessagesOptions, RelationsOptions},
    ruma::{
        OwnedEventId, UInt,
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
            relation::RelationType,
            room::{
                message::{MessageType, Relation, RoomMessageEventContent},
                redaction::SyncRoomRedactionEvent,
            },
        },
    },
};
use serde_json::json;

use crate::support::{event_json, sync_collect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reactions_threads_and_redactions() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.client("alice", PASSWORD).await?;
    let bob = server.client("bob", PASSWORD).await?;

    let mut request = CreateRoomRequest::new();
    request.name = Some("Relations".to_owned());
    request.preset = Some(RoomPreset::PublicChat);
    let room = alice.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    let bob_room = bob.join_room_by_id(&room_id).await.context("bob joins the public room")?;

    let root = room.send(RoomMessageEventContent::text_plain("original")).await?.response.event_id;
    let edit = room
        .send_raw(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "* edited",
                "m.new_content": { "msgtype": "m.text", "body": "edited" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": root },
            }),
        )
        .await?
        .response
        .event_id;
    let reaction = bob_room
        .send_raw(
            "m.reaction",
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } }),
        )
        .await?
        .response
        .event_id;
    let in_thread = bob_room
        .send_raw(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "in the thread",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": true,
                    "m.in_reply_to": { "event_id": root },
                },
            }),
        )
        .await?
        .response
        .event_id;
    let doomed = room.send(RoomMessageEventContent::text_plain("to be redacted")).await?.response.event_id;
    let redaction = room.redact(&doomed, Some("mistake"), None).await.context("alice redacts")?.event_id;

    // 1. Bob's sync brings each of them, and ruma parses each into the expected typed event.
    let got = sync_collect(&bob, &room_id, &[&root, &edit, &reaction, &in_thread, &redaction]).await?;
    let typed = |id: &OwnedEventId| -> anyhow::Result<AnySyncMessageLikeEvent> {
        let event = &got[id];
        match event.raw().deserialize().with_context(|| format!("ruma cannot parse {}", event.raw().json()))? {
            AnySyncTimelineEvent::MessageLike(event) => Ok(event),
            other => bail!("expected a message-like event, got {other:?}"),
        }
    };

    match typed(&edit)? {
        AnySyncMessageLikeEvent::RoomMessage(SyncMessageLikeEvent::Original(ev)) => match ev.content.relates_to {
            Some(Relation::Replacement(r)) => {
                ensure!(r.event_id == root, "edit points at {}", r.event_id);
                ensure!(r.new_content.msgtype.body() == "edited", "new content: {:?}", r.new_content);
            }
            other => bail!("edit parsed with relation {other:?}"),
        },
        other => bail!("edit parsed as {other:?}"),
    }
    match typed(&reaction)? {
        AnySyncMessageLikeEvent::Reaction(SyncMessageLikeEvent::Original(ev)) => {
            ensure!(ev.content.relates_to.event_id == root && ev.content.relates_to.key == "👍", "{ev:?}");
        }
        other => bail!("reaction parsed as {other:?}"),
    }
    match typed(&in_thread)? {
        AnySyncMessageLikeEvent::RoomMessage(SyncMessageLikeEvent::Original(ev)) => {
            match &ev.content.relates_to {
                Some(Relation::Thread(thread)) => ensure!(thread.event_id == root, "thread root {}", thread.event_id),
                other => bail!("thread reply parsed with relation {other:?}"),
            }
            ensure!(matches!(&ev.content.msgtype, MessageType::Text(t) if t.body == "in the thread"));
        }
        other => bail!("thread reply parsed as {other:?}"),
    }
    match typed(&redaction)? {
        AnySyncMessageLikeEvent::RoomRedaction(SyncRoomRedactionEvent::Original(ev)) => {
            // `redacts` is top-level before room v11 and in the content from v11 on.
            let target = ev.content.redacts.as_ref().or(ev.redacts.as_ref());
            ensure!(target == Some(&doomed), "redaction targets {target:?}");
        }
        other => bail!("redaction parsed as {other:?}"),
    }

    // 2. /relations lists the edit, the reaction and the thread reply, and filters by type.
    let relations = |include_relations| {
        let options = RelationsOptions { include_relations, limit: Some(UInt::from(50u32)), ..Default::default() };
        let root = root.clone();
        let bob_room = bob_room.clone();
        async move {
            let rels = bob_room.relations(root, options).await?;
            anyhow::Ok(rels.chunk.iter().filter_map(|e| e.event_id()).collect::<HashSet<_>>())
        }
    };
    let all = relations(IncludeRelations::AllRelations).await.context("GET /relations")?;
    ensure!(all == HashSet::from([edit.clone(), reaction.clone(), in_thread.clone()]), "all relations: {all:?}");
    let threads = relations(IncludeRelations::RelationsOfType(RelationType::Thread)).await?;
    ensure!(threads == HashSet::from([in_thread.clone()]), "m.thread relations: {threads:?}");
    let annotations = relations(IncludeRelations::RelationsOfType(RelationType::Annotation)).await?;
    ensure!(annotations == HashSet::from([reaction.clone()]), "m.annotation relations: {annotations:?}");
    let replacements = relations(IncludeRelations::RelationsOfType(RelationType::Replacement)).await?;
    ensure!(replacements == HashSet::from([edit.clone()]), "m.replace relations: {replacements:?}");

    // 3. The redacted event, fetched by ID, has lost its body and carries `redacted_because`,
    //    which is what makes ruma treat it as redacted.
    let fetched = bob_room.event(&doomed, None).await.context("GET /event of the redacted event")?;
    let json = event_json(&fetched)?;
    ensure!(json["content"].get("body").is_none(), "redacted event still has a body: {json}");
    ensure!(json["content"] == json!({}), "redacted m.room.message keeps no content: {json}");
    ensure!(json["unsigned"]["redacted_because"]["event_id"] == redaction.as_str(), "{json}");
    match fetched.raw().deserialize()? {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(SyncMessageLikeEvent::Redacted(_))) => {}
        other => bail!("redacted event parsed as {other:?}"),
    }

    // 4. /messages serves it redacted too.
    let mut options = MessagesOptions::backward();
    options.limit = UInt::from(50u32);
    let messages = bob_room.messages(options).await.context("GET /messages")?;
    let served = messages
        .chunk
        .iter()
        .find(|e| e.event_id().as_ref() == Some(&doomed))
        .context("redacted event missing from /messages")?;
    let json = event_json(served)?;
    ensure!(json["content"].get("body").is_none(), "/messages serves the redacted body: {json}");

    // 5. The root itself is untouched.
    let root_json = event_json(&bob_room.event(&root, None).await?)?;
    ensure!(root_json["content"]["body"] == "original", "{root_json}");

    // 6. /threads lists the root.
    let thread_roots = bob_room.list_threads(ListThreadsOptions::default()).await.context("GET /threads")?;
    let roots: Vec<_> = thread_roots.chunk.iter().filter_map(|e| e.event_id()).collect();
    ensure!(roots == vec![root.clone()], "thread roots: {roots:?}");
    Ok(())
}

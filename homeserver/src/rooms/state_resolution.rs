//! State resolution v2 over forks of a room's DAG, with ruma-state-res.
//!
//! ruma's `resolve` is synchronous and asks for events through closures, so everything
//! it may ask for (the state events, their auth chains, the conflicted subgraph) is
//! loaded first.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{EventId, OwnedEventId, events::StateEventType, room_version_rules::RoomVersionRules, state_res};

use super::{Pdu, StateMap};
use crate::services::Services;
use kairan_core::error::{Error, Result};

impl Services {
    /// The state of a room where several states meet (the states after each prev event
    /// of an event, or after each forward extremity).
    pub async fn resolve_states(&self, rules: &RoomVersionRules, states: &[Arc<StateMap>]) -> Result<StateMap> {
        // Forks rarely differ in state (messages do not change it): each distinct state
        // once, so that the work follows the states that differ, not the extremities.
        let mut distinct: Vec<&Arc<StateMap>> = Vec::with_capacity(states.len());
        for state in states {
            if !distinct.iter().any(|d| Arc::ptr_eq(d, state) || d == &state) {
                distinct.push(state);
            }
        }
        match distinct.as_slice() {
            [] => return Ok(StateMap::new()),
            [one] => return Ok((***one).clone()),
            _ => {}
        }
        let states = distinct;
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut auth_chains = Vec::new();
        let mut maps = Vec::new();
        for state in states {
            let mut map = state_res::StateMap::new();
            let mut ids = Vec::new();
            for ((t, k), id) in state.iter() {
                let event_id = OwnedEventId::try_from(id.as_str()).map_err(|e| Error::internal("state event id", e))?;
                map.insert((StateEventType::from(t.as_str()), k.clone()), event_id.clone());
                ids.push(event_id);
            }
            let chain = self.auth_chain(&ids, &mut events).await?;
            // The state events themselves are needed too.
            for id in &ids {
                self.load_into(id, &mut events).await?;
            }
            auth_chains.push(chain.into_iter().collect());
            maps.push(map);
        }
        let graph: HashMap<OwnedEventId, Vec<OwnedEventId>> =
            events.iter().map(|(id, p)| (id.clone(), p.auth_events.clone())).collect();
        let fetch = |id: &EventId| events.get(id).cloned();
        let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
            let set: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
            Some(conflicted_subgraph(&set, &graph).into_iter().collect())
        };
        let resolved = state_res::resolve(
            &rules.authorization,
            rules.state_res.v2_rules().ok_or_else(|| Error::internal("room version", "not state res v2"))?,
            maps.iter(),
            auth_chains,
            fetch,
            subgraph,
        )
        .map_err(|e| Error::internal("state resolution", e))?;
        Ok(resolved.into_iter().map(|((t, k), id)| ((t.to_string(), k), id.to_string())).collect())
    }

    /// The resolution of the states after the given state groups, remembered by the set
    /// of groups: the events a busy room receives mostly leave it unchanged.
    pub async fn resolve_groups(&self, rules: &RoomVersionRules, groups: &[i64]) -> Result<Arc<StateMap>> {
        let mut key = groups.to_vec();
        key.sort_unstable();
        key.dedup();
        if let [one] = key.as_slice() {
            return self.state_at_group(*one).await;
        }
        if let Some(resolved) = self.rooms.cached_resolution(&key) {
            return Ok(resolved);
        }
        let mut states = Vec::with_capacity(key.len());
        for group in &key {
            states.push(self.state_at_group(*group).await?);
        }
        let resolved = Arc::new(self.resolve_states(rules, &states).await?);
        self.rooms.cache_resolution(key, resolved.clone());
        Ok(resolved)
    }

    /// Every event reachable from `ids` through `auth_events`, loaded into `events`.
    pub async fn auth_chain(
        &self,
        ids: &[OwnedEventId],
        events: &mut HashMap<OwnedEventId, Arc<Pdu>>,
    ) -> Result<HashSet<OwnedEventId>> {
        let mut chain = HashSet::new();
        let mut stack: Vec<OwnedEventId> = Vec::new();
        for id in ids {
            if let Some(p) = self.load_into(id, events).await? {
                stack.extend(p.auth_events.iter().cloned());
            }
        }
        while let Some(id) = stack.pop() {
            if !chain.insert(id.clone()) {
                continue;
            }
            if let Some(p) = self.load_into(&id, events).await? {
                stack.extend(p.auth_events.iter().filter(|a| !chain.contains(*a)).cloned());
            }
        }
        Ok(chain)
    }

    async fn load_into(&self, id: &EventId, events: &mut HashMap<OwnedEventId, Arc<Pdu>>) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = events.get(id) {
            return Ok(Some(p.clone()));
        }
        let pdu = self.pdu(id.as_str()).await?;
        if let Some(p) = &pdu {
            events.insert(id.to_owned(), p.clone());
        }
        Ok(pdu)
    }
}

/// The conflicted state subgraph (room v12): every event on an auth-event path from one
/// conflicted event to another.
fn conflicted_subgraph(
    conflicted: &HashSet<OwnedEventId>,
    graph: &HashMap<OwnedEventId, Vec<OwnedEventId>>,
) -> HashSet<OwnedEventId> {
    // Events reachable from a conflicted event by at least one step.
    let mut below: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<OwnedEventId> =
        conflicted.iter().flat_map(|c| graph.get(c).cloned().unwrap_or_default()).collect();
    while let Some(id) = stack.pop() {
        if below.insert(id.clone()) {
            stack.extend(graph.get(&id).cloned().unwrap_or_default());
        }
    }
    // Events from which a conflicted event is reachable by at least one step: an
    // iterative depth-first walk (a hostile auth chain may be very long; no recursion).
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    for start in conflicted.iter().chain(below.iter()) {
        let mut stack: Vec<(OwnedEventId, bool)> = vec![(start.clone(), false)];
        while let Some((id, expanded)) = stack.pop() {
            if reaches.contains_key(&id) && !expanded {
                continue;
            }
            let parents = graph.get(&id).cloned().unwrap_or_default();
            if expanded {
                let r = parents.iter().any(|p| conflicted.contains(p) || reaches.get(p).copied().unwrap_or(false));
                reaches.insert(id, r);
                continue;
            }
            // Provisional, so a malformed (cyclic) graph terminates.
            reaches.insert(id.clone(), false);
            stack.push((id, true));
            stack.extend(parents.into_iter().filter(|p| !reaches.contains_key(p)).map(|p| (p, false)));
        }
    }
    let mut subgraph = HashSet::new();
    for id in conflicted.iter().chain(below.iter()) {
        let from_conflicted = below.contains(id);
        let to_conflicted = reaches.get(id).copied().unwrap_or(false);
        let on_path =
            if conflicted.contains(id) { from_conflicted || to_conflicted } else { from_conflicted && to_conflicted };
        if on_path {
            subgraph.insert(id.clone());
        }
    }
    subgraph
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use ruma::OwnedEventId;

    use super::conflicted_subgraph;

    fn id(s: &str) -> OwnedEventId {
        OwnedEventId::try_from(format!("${s}")).unwrap()
    }

    /// `edges`: event → its auth events.
    fn graph(edges: &[(&str, &[&str])]) -> HashMap<OwnedEventId, Vec<OwnedEventId>> {
        edges.iter().map(|(e, auth)| (id(e), auth.iter().map(|a| id(a)).collect())).collect()
    }

    #[test]
    fn subgraph_is_the_paths_between_conflicted_events() {
        // create <- power <- member_a <- name_1 ; power <- name_2 ; join_b <- create (elsewhere)
        let g = graph(&[
            ("create", &[]),
            ("power", &["create"]),
            ("member_a", &["power", "create"]),
            ("name_1", &["member_a", "power"]),
            ("name_2", &["power"]),
            ("join_b", &["create"]),
        ]);
        // name_1 and power conflict: the path name_1 -> member_a -> power is the subgraph;
        // name_2 and join_b lie on no path between conflicted events.
        let conflicted: HashSet<_> = [id("name_1"), id("power")].into();
        let sub = conflicted_subgraph(&conflicted, &g);
        assert_eq!(sub, [id("name_1"), id("member_a"), id("power")].into());
    }

    #[test]
    fn unrelated_conflicted_events_have_an_empty_subgraph() {
        let g = graph(&[("create", &[]), ("a", &["create"]), ("b", &["create"])]);
        let conflicted: HashSet<_> = [id("a"), id("b")].into();
        assert!(conflicted_subgraph(&conflicted, &g).is_empty());
    }
}

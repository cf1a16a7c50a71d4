//! Servers-of-happiness share placement, as Tahoe 1.20 computes it
//! (`immutable/happiness_upload.py`, `immutable/upload.py`, `util/happinessutil.py`).
//!
//! **Happiness** of a layout (`servers_of_happiness`) is the size of a maximum matching in the
//! bipartite graph servers × shares with an edge where a server holds (or will hold) a share.
//! For a placement that gives each share one server it is the number of distinct servers.
//!
//! **Placement** ([`share_placement`]) follows Tahoe's three phases, each a maximum bipartite
//! matching computed by Edmonds–Karp (BFS augmenting paths) with Tahoe's residual-graph
//! adjacency order, so that the same inputs give the same matching:
//! 1. shares already on read-only servers are matched to those servers;
//! 2. remaining shares already on writable servers are matched to them (if no such shares exist,
//!    Tahoe's `if servermap:` falls through to the complete graph, and so does this);
//! 3. remaining shares are matched to remaining writable servers;
//!
//! Then unmatched ("homeless") shares go back to a writable server that already has them, else to
//! the least-loaded writable server that has existing shares (ties by server id), else round-robin
//! over the writable servers.
//!
//! Deviations, all forced by Tahoe's use of Python `set`s of server ids (whose iteration order is
//! hash-randomised per process, so Tahoe's own result varies between runs):
//! - servers are considered in the given (permuted) order and shares in ascending order wherever
//!   Tahoe iterates a set;
//! - `_servermap_flow_graph` forgets to reset its edge list per server, giving later servers
//!   edges to earlier servers' shares; lafs uses the intended edges (only shares a server holds);
//! - existing shares with numbers `>= N` are not placed (they still count for happiness).
//!
//! [`place`] wraps this the way `Tahoe2ServerSelector` does: only the first `2N` permuted servers
//! are candidates, a server is writable iff its `maximum-immutable-share-size` is at least the
//! allocated share size, and the result is happy iff the happiness of existing ∪ placed shares is
//! at least `happy`. Pure, no I/O; all sizes are bounded by `2N + N` nodes (N ≤ 256).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Why a placement is not good enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// `NoServersError`.
    #[error("no storage servers")]
    NoServers,
    /// `UploadUnhappinessError`, with Tahoe's `failure_message` wording.
    #[error("{}", unhappy_message(*.peer_count, *.k, *.happy, *.effective_happy))]
    Unhappy {
        peer_count: usize,
        k: usize,
        happy: usize,
        effective_happy: usize,
    },
    /// Encoding parameters out of range.
    #[error("bad encoding parameters")]
    BadParameters,
}

fn unhappy_message(peer_count: usize, k: usize, happy: usize, effective_happy: usize) -> String {
    if peer_count < k {
        format!(
            "shares could be placed or found on only {peer_count} server(s). We were asked to place \
             shares on at least {happy} server(s) such that any {k} of them have enough shares to \
             recover the file."
        )
    } else if effective_happy < k {
        format!(
            "shares could be placed or found on {peer_count} server(s), but they are not spread out \
             evenly enough to ensure that any {k} of these servers would have enough shares to \
             recover the file. We were asked to place shares on at least {happy} servers such that \
             any {k} of them have enough shares to recover the file."
        )
    } else {
        format!(
            "shares could be placed on only {effective_happy} server(s) such that any {k} of them \
             have enough shares to recover the file, but we were asked to place shares on at least \
             {happy} such servers."
        )
    }
}

/// Maximum bipartite matching by Edmonds–Karp with Tahoe's residual adjacency order.
///
/// `edges[p]` lists the share indices (ascending, < `num_shares`) that peer `p` may take.
/// Returns, for each share index, the matched peer index.
fn tahoe_matching(edges: &[Vec<usize>], num_shares: usize) -> Vec<Option<usize>> {
    let np = edges.len();
    // Node numbering as Tahoe's: 0 source, 1..=np peers, np+1..=np+ns shares, then the sink.
    let sink = np + num_shares + 1;
    let mut share_peer: Vec<Option<usize>> = vec![None; num_shares];
    let mut peer_matched = vec![false; np];
    loop {
        // BFS over the residual graph, visiting neighbours in the order Tahoe's
        // `residual_network` builds them (see the module doc).
        let mut pred: Vec<Option<usize>> = vec![None; sink + 1];
        let mut seen = vec![false; sink + 1];
        let mut queue = std::collections::VecDeque::new();
        seen[0] = true;
        queue.push_back(0usize);
        while let Some(n) = queue.pop_front() {
            let mut visit =
                |v: usize,
                 pred: &mut Vec<Option<usize>>,
                 queue: &mut std::collections::VecDeque<usize>| {
                    if !seen[v] {
                        seen[v] = true;
                        pred[v] = Some(n);
                        queue.push_back(v);
                    }
                };
            if n == 0 {
                for (p, matched) in peer_matched.iter().enumerate() {
                    if !matched {
                        visit(p + 1, &mut pred, &mut queue);
                    }
                }
            } else if n <= np {
                let p = n - 1;
                if peer_matched[p] {
                    visit(0, &mut pred, &mut queue);
                }
                for &s in &edges[p] {
                    if share_peer[s] != Some(p) {
                        visit(np + 1 + s, &mut pred, &mut queue);
                    }
                }
            } else if n < sink {
                let s = n - np - 1;
                match share_peer[s] {
                    Some(p) => visit(p + 1, &mut pred, &mut queue),
                    None => visit(sink, &mut pred, &mut queue),
                }
            }
            // The sink's residual edges lead back to matched shares; they can never shorten the
            // path to the sink, whose predecessor is fixed once it is seen.
        }
        if !seen[sink] {
            return share_peer;
        }
        // Augment along the path: every peer→share step becomes a matched pair.
        let mut v = sink;
        while let Some(u) = pred[v] {
            if (1..=np).contains(&u) && v > np && v < sink {
                share_peer[v - np - 1] = Some(u - 1);
            }
            if u == 0 {
                peer_matched[v - 1] = true;
            }
            v = u;
        }
    }
}

/// `_calculate_mappings`: matches `peers` to `shares`; `servermap` `None` (or empty) means every
/// peer may take every share. Returns share → matched peer or `None` for each share.
fn calculate_mappings<S: Ord + Clone>(
    peers: &[S],
    shares: &[u16],
    servermap: Option<&BTreeMap<S, BTreeSet<u16>>>,
) -> BTreeMap<u16, Option<S>> {
    let servermap = servermap.filter(|m| !m.is_empty());
    let edges: Vec<Vec<usize>> = peers
        .iter()
        .map(|p| match servermap {
            None => (0..shares.len()).collect(),
            Some(m) => shares
                .iter()
                .enumerate()
                .filter(|(_, s)| m.get(p).is_some_and(|held| held.contains(s)))
                .map(|(i, _)| i)
                .collect(),
        })
        .collect();
    let matching = tahoe_matching(&edges, shares.len());
    shares
        .iter()
        .zip(matching)
        .map(|(s, p)| (*s, p.and_then(|p| peers.get(p).cloned())))
        .collect()
}

/// `share_placement`: where each of the `total_shares` shares should go.
///
/// `peers` are the writable servers and `readonly` the read-only ones, each in permuted order;
/// `existing` maps servers to the share numbers they already hold. Returns share → server; empty
/// if there is no writable server (as Tahoe). A share is absent only if it could go nowhere.
pub fn share_placement<S: Ord + Clone>(
    peers: &[S],
    readonly: &[S],
    total_shares: u16,
    existing: &BTreeMap<S, BTreeSet<u16>>,
) -> BTreeMap<u16, S> {
    if peers.is_empty() {
        return BTreeMap::new();
    }
    let is_ro = |p: &S| readonly.contains(p);
    let in_range = |s: &u16| *s < total_shares;
    let all_shares: BTreeSet<u16> = (0..total_shares).collect();

    // Phase 1: read-only servers keep (renew) what they have.
    let readonly_map: BTreeMap<S, BTreeSet<u16>> = existing
        .iter()
        .filter(|(p, _)| is_ro(p))
        .map(|(p, s)| (p.clone(), s.iter().copied().filter(in_range).collect()))
        .collect();
    let readonly_shares: Vec<u16> = readonly_map
        .values()
        .flatten()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let readonly_mappings = calculate_mappings(readonly, &readonly_shares, Some(&readonly_map));
    let used_peers: BTreeSet<S> = readonly_mappings.values().flatten().cloned().collect();
    let used_shares: BTreeSet<u16> = readonly_mappings
        .iter()
        .filter(|(_, p)| p.is_some())
        .map(|(s, _)| *s)
        .collect();

    // Phase 2: existing shares on the other servers.
    let mut new_peers: Vec<S> = peers
        .iter()
        .filter(|p| !used_peers.contains(p))
        .cloned()
        .collect();
    let new_shares: Vec<u16> = all_shares.difference(&used_shares).copied().collect();
    let mut servermap: BTreeMap<S, BTreeSet<u16>> = BTreeMap::new();
    for (p, held) in existing {
        if used_peers.contains(p) {
            continue;
        }
        let rest: BTreeSet<u16> = held.difference(&used_shares).copied().collect();
        if rest.is_empty() {
            // Tahoe also drops such a server from this upload's new peers.
            new_peers.retain(|q| q != p);
        } else {
            servermap.insert(p.clone(), rest);
        }
    }
    let existing_mappings = calculate_mappings(&new_peers, &new_shares, Some(&servermap));
    let existing_peers: BTreeSet<S> = existing_mappings.values().flatten().cloned().collect();
    let existing_shares: BTreeSet<u16> = existing_mappings
        .iter()
        .filter(|(_, p)| p.is_some())
        .map(|(s, _)| *s)
        .collect();

    // Phase 3: the rest, anywhere.
    let last_peers: Vec<S> = new_peers
        .iter()
        .filter(|p| !existing_peers.contains(p) && !used_peers.contains(p))
        .cloned()
        .collect();
    let last_shares: Vec<u16> = new_shares
        .iter()
        .filter(|s| !existing_shares.contains(s) && !used_shares.contains(s))
        .copied()
        .collect();
    let new_mappings = calculate_mappings(&last_peers, &last_shares, None);

    let mut mappings: BTreeMap<u16, Option<S>> = BTreeMap::new();
    for m in [readonly_mappings, existing_mappings, new_mappings] {
        mappings.extend(m);
    }

    // Homeless shares: renew where they already are, else spread over the writable servers that
    // hold shares, least loaded first (ties by server id, as Python compares the tuples).
    let rw_existing: BTreeMap<&S, &BTreeSet<u16>> =
        existing.iter().filter(|(p, _)| !is_ro(p)).collect();
    let homeless: Vec<u16> = mappings
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(s, _)| *s)
        .collect();
    if !homeless.is_empty() {
        let mut to_distribute = Vec::new();
        for s in homeless {
            match rw_existing.iter().find(|(_, held)| held.contains(&s)) {
                Some((p, _)) => {
                    mappings.insert(s, Some((*p).clone()));
                }
                None => to_distribute.push(s),
            }
        }
        if !rw_existing.is_empty() {
            let mut load: BTreeMap<&S, usize> = rw_existing.keys().map(|p| (*p, 0)).collect();
            for p in mappings.values().flatten() {
                if let Some(c) = load.get_mut(p) {
                    *c += 1;
                }
            }
            let mut heap: BinaryHeap<std::cmp::Reverse<(usize, &S)>> = load
                .into_iter()
                .map(|(p, c)| std::cmp::Reverse((c, p)))
                .collect();
            for s in to_distribute {
                if let Some(std::cmp::Reverse((c, p))) = heap.pop() {
                    mappings.insert(s, Some(p.clone()));
                    heap.push(std::cmp::Reverse((c + 1, p)));
                }
            }
        }
    }

    // Anything still unplaced goes round-robin over the writable servers.
    let rw: Vec<&S> = peers.iter().filter(|p| !is_ro(p)).collect();
    let mut next = 0usize;
    let mut out = BTreeMap::new();
    for (s, p) in mappings {
        match p {
            Some(p) => {
                out.insert(s, p);
            }
            None => {
                if let Some(p) = rw.get(next % rw.len().max(1)) {
                    out.insert(s, (*p).clone());
                    next += 1;
                }
            }
        }
    }
    out
}

/// `servers_of_happiness`: the size of a maximum matching between servers and shares, for a
/// layout given as share → servers holding (or receiving) it.
pub fn servers_of_happiness<S: Ord + Clone>(sharemap: &BTreeMap<u16, BTreeSet<S>>) -> usize {
    // Kuhn's augmenting-path algorithm over servers (independent of `tahoe_matching`).
    let servers: Vec<&S> = sharemap
        .values()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let shares: Vec<u16> = sharemap.keys().copied().collect();
    let adj: Vec<Vec<usize>> = servers
        .iter()
        .map(|srv| {
            shares
                .iter()
                .enumerate()
                .filter(|(_, sh)| sharemap.get(sh).is_some_and(|set| set.contains(*srv)))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    fn augment(
        u: usize,
        adj: &[Vec<usize>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for &v in &adj[u] {
            if !seen[v] {
                seen[v] = true;
                if owner[v].is_none_or(|w| augment(w, adj, seen, owner)) {
                    owner[v] = Some(u);
                    return true;
                }
            }
        }
        false
    }
    let mut owner = vec![None; shares.len()];
    let mut size = 0;
    for u in 0..servers.len() {
        let mut seen = vec![false; shares.len()];
        if augment(u, &adj, &mut seen, &mut owner) {
            size += 1;
        }
    }
    size
}

/// The happiness of a placement (one server per share): the number of distinct servers.
pub fn happiness<S: Ord>(placement: &BTreeMap<u16, S>) -> usize {
    placement.values().collect::<BTreeSet<_>>().len()
}

/// One permuted server as the uploader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<S> {
    pub id: S,
    /// `maximum-immutable-share-size` from the server's version document.
    pub max_share_size: u64,
}

/// A placement request (see [`place`]).
#[derive(Debug, Clone)]
pub struct PlacementRequest<S> {
    /// All servers, in permuted order for the storage index.
    pub candidates: Vec<Candidate<S>>,
    /// The size each share needs on a server (`allocated_size` of the share layout).
    pub allocated_size: u64,
    /// Shares the servers report already holding.
    pub existing: BTreeMap<S, BTreeSet<u16>>,
    pub needed: u16,
    pub happy: u16,
    pub total: u16,
}

/// A successful placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<S> {
    /// Share → server to allocate (or renew) it on.
    pub shares: BTreeMap<u16, S>,
    /// Happiness of existing ∪ placed shares.
    pub happiness: usize,
}

/// Server selection as `Tahoe2ServerSelector` does it, without the network.
pub fn place<S: Ord + Clone>(req: &PlacementRequest<S>) -> Result<Placement<S>, PlacementError> {
    let n = usize::from(req.total);
    if req.needed == 0 || req.needed > req.total || n > 256 {
        return Err(PlacementError::BadParameters);
    }
    if req.candidates.is_empty() {
        return Err(PlacementError::NoServers);
    }
    let considered = &req.candidates[..req.candidates.len().min(2 * n)];
    let (writable, readonly): (Vec<&Candidate<S>>, Vec<&Candidate<S>>) = considered
        .iter()
        .partition(|c| c.max_share_size >= req.allocated_size);
    let writable: Vec<S> = writable.into_iter().map(|c| c.id.clone()).collect();
    let readonly: Vec<S> = readonly.into_iter().map(|c| c.id.clone()).collect();
    let existing: BTreeMap<S, BTreeSet<u16>> = req
        .existing
        .iter()
        .filter(|(p, _)| considered.iter().any(|c| c.id == **p))
        .map(|(p, s)| (p.clone(), s.clone()))
        .collect();
    let shares = share_placement(&writable, &readonly, req.total, &existing);
    let mut merged: BTreeMap<u16, BTreeSet<S>> = BTreeMap::new();
    for (p, held) in &existing {
        for s in held {
            merged.entry(*s).or_default().insert(p.clone());
        }
    }
    for (s, p) in &shares {
        merged.entry(*s).or_default().insert(p.clone());
    }
    let effective_happy = servers_of_happiness(&merged);
    if effective_happy < usize::from(req.happy) {
        let peer_count = merged.values().flatten().collect::<BTreeSet<_>>().len();
        return Err(PlacementError::Unhappy {
            peer_count,
            k: usize::from(req.needed),
            happy: usize::from(req.happy),
            effective_happy,
        });
    }
    Ok(Placement {
        shares,
        happiness: effective_happy,
    })
}

//! A journey drawn as its graph: the entry and each step as a node (kind, name, key, counts),
//! each way out of a step as an edge labelled with its branch and share. Layout is by
//! distance from the entry (one row per step of distance), rendered as inline SVG on the
//! server; the counts and shares carry ids the page's script refreshes from the live values
//! ([`live_values`]).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use journeys_proto::v1 as pb;
use journeys_proto::v1::step::Kind;

use super::html::{esc, share};

const NODE_W: i64 = 240;
const NODE_H: i64 = 96;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 84;
const MARGIN: i64 = 24;
/// Room on the right for edges that go back up (return to start, loops).
const BACK_EDGE_ROOM: i64 = 90;

/// A node: index 0 is the entry, index `i + 1` is `steps[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub key: String,
    pub name: String,
    pub kind: &'static str,
    /// Validation problems whose path points into this node.
    pub problems: Vec<String>,
    pub x: i64,
    pub y: i64,
}

/// What an edge's count is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Counter {
    /// A named branch of a hold-until, data split or random split.
    Branch(String),
    /// A data split's "everyone else".
    Else,
    /// A hold-until's timeout.
    Timeout,
    /// The one way out of a delay or send, or the entry.
    Plain,
}

/// A way from one node to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub label: String,
    pub counter: Counter,
}

/// A journey's nodes and edges, laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub width: i64,
    pub height: i64,
}

/// The kind of a step as the console names it.
pub fn kind_name(step: &pb::Step) -> &'static str {
    match &step.kind {
        Some(Kind::Delay(_)) => "delay",
        Some(Kind::HoldUntil(_)) => "hold until",
        Some(Kind::DataSplit(_)) => "data split",
        Some(Kind::RandomSplit(_)) => "random split",
        Some(Kind::Send(_)) => "send",
        Some(Kind::End(_)) => "end",
        None => "no kind",
    }
}

/// The ways out of `step`: (next key, label, counter).
fn exits(step: &pb::Step) -> Vec<(String, String, Counter)> {
    let mut out = Vec::new();
    match &step.kind {
        Some(Kind::Delay(d)) => {
            let label = format!(
                "after {}",
                crate::ctl::output::duration(d.duration.as_ref())
            );
            out.push((d.next.clone(), label, Counter::Plain));
        }
        Some(Kind::HoldUntil(h)) => {
            for b in &h.branches {
                let next = if b.return_to_start {
                    step.key.clone()
                } else {
                    b.next.clone()
                };
                let label = format!("{} ({})", b.name, b.event);
                out.push((next, label, Counter::Branch(b.name.clone())));
            }
            let label = format!(
                "timeout {}",
                crate::ctl::output::duration(h.max_duration.as_ref())
            );
            out.push((h.timeout_next.clone(), label, Counter::Timeout));
        }
        Some(Kind::DataSplit(s)) => {
            for b in &s.branches {
                out.push((
                    b.next.clone(),
                    b.name.clone(),
                    Counter::Branch(b.name.clone()),
                ));
            }
            out.push((
                s.else_next.clone(),
                "everyone else".to_owned(),
                Counter::Else,
            ));
        }
        Some(Kind::RandomSplit(s)) => {
            for b in &s.branches {
                let label = format!("{} ({}%)", b.name, b.percent);
                out.push((b.next.clone(), label, Counter::Branch(b.name.clone())));
            }
        }
        Some(Kind::Send(s)) => out.push((s.next.clone(), String::new(), Counter::Plain)),
        Some(Kind::End(_)) | None => {}
    }
    out
}

/// The node a validation problem's path points into: `steps[i]…` is step `i`, the entry's
/// fields are the entry node, anything else belongs to the journey as a whole.
pub fn node_of_path(path: &str) -> Option<usize> {
    if let Some(rest) = path.strip_prefix("steps[") {
        let index: usize = rest.split(']').next()?.parse().ok()?;
        return Some(index + 1);
    }
    ["entry", "start_step", "entry_rule", "unique_identifier"]
        .iter()
        .any(|field| path.starts_with(field))
        .then_some(0)
}

/// Lays out `journey`, attaching `problems` to the nodes their paths point into.
pub fn layout(journey: &pb::Journey, problems: &[pb::Problem]) -> Graph {
    let mut nodes = nodes_of(journey);
    for problem in problems {
        if let Some(node) = node_of_path(&problem.path).and_then(|i| nodes.get_mut(i)) {
            node.problems.push(problem.message.clone());
        }
    }
    let edges = edges_of(journey);
    let (width, height) = place(&mut nodes, &edges);
    Graph {
        nodes,
        edges,
        width,
        height,
    }
}

/// The entry and the steps, not yet placed.
fn nodes_of(journey: &pb::Journey) -> Vec<Node> {
    let entry = journey
        .entry
        .as_ref()
        .map(|e| e.event.clone())
        .filter(|event| !event.is_empty())
        .unwrap_or_else(|| "(no entry event)".to_owned());
    let mut nodes = vec![Node {
        key: String::new(),
        name: entry,
        kind: "entry",
        problems: Vec::new(),
        x: 0,
        y: 0,
    }];
    nodes.extend(journey.steps.iter().map(|step| Node {
        key: step.key.clone(),
        name: step.name.clone(),
        kind: kind_name(step),
        problems: Vec::new(),
        x: 0,
        y: 0,
    }));
    nodes
}

/// The entry's edge to the start step and every step's ways out (to steps that exist).
fn edges_of(journey: &pb::Journey) -> Vec<Edge> {
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (i, step) in journey.steps.iter().enumerate() {
        index_of.entry(step.key.as_str()).or_insert(i + 1);
    }
    let mut edges = Vec::new();
    if let Some(&start) = index_of.get(journey.start_step.as_str()) {
        edges.push(Edge {
            from: 0,
            to: start,
            label: String::new(),
            counter: Counter::Plain,
        });
    }
    for (i, step) in journey.steps.iter().enumerate() {
        for (next, label, counter) in exits(step) {
            if let Some(&to) = index_of.get(next.as_str()) {
                edges.push(Edge {
                    from: i + 1,
                    to,
                    label,
                    counter,
                });
            }
        }
    }
    edges
}

/// Places the nodes in rows by distance from the entry (steps not reached go on a last row),
/// each row centred; the drawing's width and height.
fn place(nodes: &mut [Node], edges: &[Edge]) -> (i64, i64) {
    let mut row: Vec<Option<usize>> = vec![None; nodes.len()];
    row[0] = Some(0);
    let mut order = vec![0];
    let mut queue = VecDeque::from([0]);
    while let Some(n) = queue.pop_front() {
        for edge in edges.iter().filter(|e| e.from == n) {
            if row[edge.to].is_none() {
                row[edge.to] = row[n].map(|r| r + 1);
                order.push(edge.to);
                queue.push_back(edge.to);
            }
        }
    }
    let last = row.iter().flatten().max().copied().unwrap_or(0) + 1;
    for (i, r) in row.iter_mut().enumerate() {
        if r.is_none() {
            *r = Some(last);
            order.push(i);
        }
    }
    let rows = row.iter().flatten().max().copied().unwrap_or(0) + 1;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); rows];
    for &n in &order {
        if let Some(r) = row[n] {
            members[r].push(n);
        }
    }
    let widest = members.iter().map(Vec::len).max().unwrap_or(1);
    let widest = i64::try_from(widest).unwrap_or(1);
    let width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X + BACK_EDGE_ROOM;
    let mut height = MARGIN;
    for (r, in_row) in members.iter().enumerate() {
        let count = i64::try_from(in_row.len()).unwrap_or(1);
        let row_width = count * NODE_W + (count - 1) * GAP_X;
        let left = MARGIN + (width - BACK_EDGE_ROOM - 2 * MARGIN - row_width) / 2;
        let y = MARGIN + i64::try_from(r).unwrap_or(0) * (NODE_H + GAP_Y);
        for (k, &n) in in_row.iter().enumerate() {
            nodes[n].x = left + i64::try_from(k).unwrap_or(0) * (NODE_W + GAP_X);
            nodes[n].y = y;
        }
        height = y + NODE_H + MARGIN;
    }
    // Room under the last row for a problem's note.
    (width, height + 20)
}

/// How many instances took `edge`, from the journey's statistics.
fn taken(graph: &Graph, edge: &Edge, stats: &pb::GetJourneyStatsResponse) -> Option<i64> {
    let key = &graph.nodes[edge.from].key;
    let branches = || stats.branches.iter().filter(move |b| &b.step_key == key);
    match &edge.counter {
        Counter::Branch(name) => Some(
            branches()
                .filter(|b| !b.everyone_else && !b.timed_out && &b.branch_name == name)
                .map(|b| b.taken)
                .sum(),
        ),
        Counter::Else => Some(
            branches()
                .filter(|b| b.everyone_else)
                .map(|b| b.taken)
                .sum(),
        ),
        Counter::Timeout => Some(branches().filter(|b| b.timed_out).map(|b| b.taken).sum()),
        Counter::Plain => None,
    }
}

fn step_stats<'a>(stats: &'a pb::GetJourneyStatsResponse, key: &str) -> Option<&'a pb::StepStats> {
    stats.steps.iter().find(|s| s.step_key == key)
}

/// The live texts of the graph and the step table, by element id: `n{i}-entered`,
/// `n{i}-waiting`, `n{i}-completed`, `n{i}-exited` and `e{j}-share`.
pub fn live_values(graph: &Graph, stats: &pb::GetJourneyStatsResponse) -> Vec<(String, String)> {
    let mut out = Vec::new();
    out.push(("n0-entered".to_owned(), stats.entries.to_string()));
    for (i, node) in graph.nodes.iter().enumerate().skip(1) {
        let s = step_stats(stats, &node.key).cloned().unwrap_or_default();
        out.push((format!("n{i}-entered"), s.entered.to_string()));
        out.push((format!("n{i}-waiting"), s.waiting.to_string()));
        out.push((format!("n{i}-completed"), s.completed.to_string()));
        out.push((format!("n{i}-exited"), s.exited.to_string()));
    }
    for (j, edge) in graph.edges.iter().enumerate() {
        let Some(n) = taken(graph, edge, stats) else {
            continue;
        };
        let whole: i64 = graph
            .edges
            .iter()
            .filter(|e| e.from == edge.from)
            .filter_map(|e| taken(graph, e, stats))
            .sum();
        out.push((format!("e{j}-share"), format!("{} · {n}", share(n, whole))));
    }
    out
}

/// The text of the live value `id` in `values`, `-` when there is none.
fn value<'a>(values: &'a [(String, String)], id: &str) -> &'a str {
    values
        .iter()
        .find(|(k, _)| k == id)
        .map_or("-", |(_, v)| v.as_str())
}

/// The graph as inline SVG, with `values` ([`live_values`]) filled in.
pub fn svg(graph: &Graph, title: &str, values: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"graph\" role=\"img\" aria-labelledby=\"graph-title\" \
         viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"graph-title\">{title}</title>\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" \
         markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\"/></marker></defs>",
        w = graph.width,
        h = graph.height,
        title = esc(title),
    );
    for j in 0..graph.edges.len() {
        edge_svg(&mut s, graph, j, values);
    }
    for i in 0..graph.nodes.len() {
        node_svg(&mut s, graph, i, values);
    }
    s.push_str("</svg>");
    s
}

/// Draws edge `j`: down to a lower row, or around the right side back up.
fn edge_svg(s: &mut String, graph: &Graph, j: usize, values: &[(String, String)]) {
    let edge = &graph.edges[j];
    let from = &graph.nodes[edge.from];
    let to = &graph.nodes[edge.to];
    let siblings: Vec<usize> = graph
        .edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.from == edge.from)
        .map(|(k, _)| k)
        .collect();
    let nth = i64::try_from(siblings.iter().position(|&k| k == j).unwrap_or(0)).unwrap_or(0);
    let fan = i64::try_from(siblings.len()).unwrap_or(1);
    let (path, lx, ly) = if to.y > from.y {
        let x1 = from.x + NODE_W * (nth + 1) / (fan + 1);
        let y1 = from.y + NODE_H;
        let x2 = to.x + NODE_W / 2;
        let y2 = to.y;
        let my = (y1 + y2) / 2;
        (
            format!("M{x1},{y1} C{x1},{my} {x2},{my} {x2},{y2}"),
            (x1 + x2) / 2,
            my,
        )
    } else {
        let x1 = from.x + NODE_W;
        let y1 = from.y + NODE_H / 2 + 10 * nth;
        let x2 = to.x + NODE_W;
        let y2 = to.y + NODE_H / 3;
        let bulge = x1.max(x2) + BACK_EDGE_ROOM - 20;
        (
            format!("M{x1},{y1} C{bulge},{y1} {bulge},{y2} {x2},{y2}"),
            bulge - 10,
            (y1 + y2) / 2,
        )
    };
    let _ = write!(
        s,
        "<g class=\"edge\"><path d=\"{path}\" marker-end=\"url(#arrow)\"/>"
    );
    let share_id = format!("e{j}-share");
    let shared = values.iter().any(|(k, _)| k == &share_id);
    if !edge.label.is_empty() || shared {
        let _ = write!(
            s,
            "<text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" class=\"edge-label\">{}",
            esc(&edge.label)
        );
        if shared {
            let _ = write!(
                s,
                "<tspan x=\"{lx}\" dy=\"1.2em\" id=\"{share_id}\">{}</tspan>",
                esc(value(values, &share_id))
            );
        }
        s.push_str("</text>");
    }
    s.push_str("</g>");
}

/// Draws node `i`: kind and key, name, counts, and its first problem (all of them on hover).
fn node_svg(s: &mut String, graph: &Graph, i: usize, values: &[(String, String)]) {
    let node = &graph.nodes[i];
    let class = if node.problems.is_empty() {
        "node"
    } else {
        "node has-problems"
    };
    let (x, y) = (node.x, node.y);
    let kind_text = if node.key.is_empty() {
        node.kind.to_owned()
    } else {
        format!("{} · {}", node.kind, node.key)
    };
    let _ = write!(
        s,
        "<g class=\"{class} kind-{kind}\" data-key=\"{key}\"><rect x=\"{x}\" y=\"{y}\" \
         width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\"/>\
         <text x=\"{tx}\" y=\"{y1}\" class=\"node-kind\">{kind_text}</text>\
         <text x=\"{tx}\" y=\"{y2}\" class=\"node-name\">{name}</text>",
        kind = node.kind.replace(' ', "-"),
        key = esc(&node.key),
        tx = x + 10,
        y1 = y + 18,
        y2 = y + 40,
        kind_text = esc(&kind_text),
        name = esc(&node.name),
    );
    let count = |name: &str| {
        let id = format!("n{i}-{name}");
        format!(
            "{name} <tspan id=\"{id}\">{}</tspan>",
            esc(value(values, &id))
        )
    };
    if i == 0 {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"node-counts\">{}</text>",
            x + 10,
            y + 64,
            count("entered")
        );
    } else {
        let _ = write!(
            s,
            "<text x=\"{tx}\" y=\"{y1}\" class=\"node-counts\">{} · {}</text>\
             <text x=\"{tx}\" y=\"{y2}\" class=\"node-counts\">{} · {}</text>",
            count("entered"),
            count("waiting"),
            count("completed"),
            count("exited"),
            tx = x + 10,
            y1 = y + 62,
            y2 = y + 82,
        );
    }
    if let Some(first) = node.problems.first() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"node-problem\">⚠ {}</text><title>{}</title>",
            x + 10,
            y + NODE_H + 16,
            esc(&crate::ctl::output::one_line(first, 40)),
            esc(&node.problems.join("\n"))
        );
    }
    s.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout() -> pb::Journey {
        let text = include_str!("../../../../examples/abandoned-checkout.json");
        let value: serde_json::Value = serde_json::from_str(text).expect("example JSON");
        crate::ctl::input::message(&value["journey"], "example").expect("example journey")
    }

    #[test]
    fn steps_become_nodes_and_branches_labelled_edges() {
        let graph = layout(&checkout(), &[]);
        let names: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "checkout_started",
                "Wait for purchase",
                "Send checkout nudge",
                "Purchased in time",
                "Nudged"
            ]
        );
        let labels: Vec<(usize, usize, &str)> = graph
            .edges
            .iter()
            .map(|e| (e.from, e.to, e.label.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                (0, 1, ""),
                (1, 3, "Purchased (purchase_completed)"),
                (1, 2, "timeout 1h"),
                (2, 4, ""),
            ]
        );
        // Rows by distance: entry, hold, {purchased, nudge}, done.
        assert!(graph.nodes[0].y < graph.nodes[1].y);
        assert_eq!(graph.nodes[2].y, graph.nodes[3].y);
        assert!(graph.nodes[4].y > graph.nodes[2].y);
    }

    #[test]
    fn shares_come_from_the_branch_counts_with_the_timeout_among_them() {
        let graph = layout(&checkout(), &[]);
        let stats = pb::GetJourneyStatsResponse {
            entries: 4,
            steps: vec![pb::StepStats {
                step_key: "wait_for_purchase".into(),
                entered: 4,
                completed: 4,
                ..pb::StepStats::default()
            }],
            branches: vec![
                pb::BranchStats {
                    step_key: "wait_for_purchase".into(),
                    branch_name: "Purchased".into(),
                    taken: 1,
                    ..pb::BranchStats::default()
                },
                pb::BranchStats {
                    step_key: "wait_for_purchase".into(),
                    taken: 3,
                    timed_out: true,
                    ..pb::BranchStats::default()
                },
            ],
            ..pb::GetJourneyStatsResponse::default()
        };
        let values = live_values(&graph, &stats);
        let get = |id: &str| values.iter().find(|(k, _)| k == id).map(|(_, v)| v.clone());
        assert_eq!(get("n1-entered").as_deref(), Some("4"));
        assert_eq!(get("n0-entered").as_deref(), Some("4"));
        assert_eq!(get("e1-share").as_deref(), Some("25% · 1"));
        assert_eq!(get("e2-share").as_deref(), Some("75% · 3"));
        assert_eq!(get("e3-share"), None);
    }

    #[test]
    fn problems_land_on_the_nodes_their_paths_name() {
        assert_eq!(node_of_path("steps[2].send.destination_id"), Some(3));
        assert_eq!(node_of_path("entry.event"), Some(0));
        assert_eq!(node_of_path("exit_rules[0].event"), None);
        let graph = layout(
            &checkout(),
            &[pb::Problem {
                path: "steps[1].send.destination_id".into(),
                message: "destination 'webhook' does not exist".into(),
            }],
        );
        assert_eq!(
            graph.nodes[2].problems,
            ["destination 'webhook' does not exist"]
        );
    }

    #[test]
    fn names_are_escaped_in_the_drawing() {
        let mut journey = checkout();
        journey.steps[0].name = "<script>alert(1)</script>".into();
        let graph = layout(&journey, &[]);
        let drawn = svg(&graph, "<b>t</b>", &[]);
        assert!(!drawn.contains("<script>"), "{drawn}");
        assert!(drawn.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(drawn.contains("&lt;b&gt;t&lt;/b&gt;"));
    }
}

//! The CI smoke run's verdict (`BENCH_SMOKE=1`): every scenario ran and
//! nothing was lost or left unanswered. Timings are never judged here; a
//! loaded CI machine only makes them slower.

use serde_json::Value;

/// What went wrong in `results`, one line each; empty when all is well.
pub fn failures(results: &Value, wanted: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in wanted {
        if results[*name].is_null() {
            out.push(format!("{name}: the scenario produced no result"));
        }
    }
    if let Some(runs) = results["durable"]["runs"].as_array() {
        for (i, r) in runs.iter().enumerate() {
            let accepted = r["accepted"].as_u64().unwrap_or(0);
            let seen = r["subscriber_distinct"].as_u64().unwrap_or(0);
            if accepted == 0 {
                out.push(format!("durable round {}: nothing was accepted", i + 1));
            }
            if seen < accepted {
                out.push(format!(
                    "durable round {}: {} accepted, the subscriber saw {seen} distinct ids",
                    i + 1,
                    accepted
                ));
            }
        }
    }
    let backlog = &results["backlog"];
    if !backlog.is_null() {
        let lost = backlog["lost"].as_u64().unwrap_or(u64::MAX);
        if lost != 0 || backlog["accepted"].as_u64().unwrap_or(0) == 0 {
            out.push(format!(
                "backlog: accepted {}, lost {lost}",
                backlog["accepted"]
            ));
        }
        let salvage = &backlog["salvage"];
        if salvage["messages"] != backlog["accepted"]
            || salvage["unreadable"] != 0
            || salvage["depth_after"] != backlog["accepted"]
        {
            out.push(format!(
                "backlog: the salvage of {} messages imported {}, {} unreadable, {} queued after",
                backlog["accepted"],
                salvage["messages"],
                salvage["unreadable"],
                salvage["depth_after"]
            ));
        }
    }
    for conc in ["concurrent_4", "concurrent_16"] {
        let relayed = &results["relay"][conc]["relayed"];
        if !results["relay"].is_null() && relayed["non_200"].as_u64() != Some(0) {
            out.push(format!(
                "relay {conc}: non-200 answers: {}",
                relayed["non_200"]
            ));
        }
    }
    out
}

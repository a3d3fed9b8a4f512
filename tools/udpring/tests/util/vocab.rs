//! Checks a `--json` document against the written vocabulary,
//! tools/udpring/json-vocabulary.json: every name in the document, at any
//! depth, is listed there (an unlisted name fails), has the type listed
//! wherever it appears, no retired name appears, and the document says its
//! command. Every document the tests parse goes through [`check`].

use serde_json::Value;

fn vocabulary() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/json-vocabulary.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the vocabulary file"))
        .expect("the vocabulary is JSON")
}

fn is_count(v: &Value) -> bool {
    v.is_u64()
}

fn is_number(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0)
}

fn has_type(ty: &str, v: &Value) -> Result<(), String> {
    let ok = match ty {
        "string" => v.is_string(),
        "string_or_null" => v.is_null() || v.is_string(),
        "object" => v.is_object(),
        "object_or_null" => v.is_null() || v.is_object(),
        "signed_number_or_null" => v.is_null() || v.as_f64().is_some_and(f64::is_finite),
        "label_counts" => v.as_object().is_some_and(|m| m.values().all(is_count)),
        "bucket_list" => v.as_array().is_some_and(|a| {
            a.iter().all(|p| {
                p.as_array()
                    .is_some_and(|p| p.len() == 2 && p.iter().all(is_count))
            })
        }),
        "string_list" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "bool" => v.is_boolean(),
        "count" => is_count(v),
        "count_or_null" => v.is_null() || is_count(v),
        "seconds" | "number" => is_number(v),
        "number_or_null" => v.is_null() || is_number(v),
        "latency_us_or_null" => {
            v.is_null()
                || v.as_object().is_some_and(|m| {
                    let keys = ["min", "mean", "p50", "p90", "p99", "p999", "p9999", "max"];
                    m.len() == keys.len() && keys.iter().all(|k| m.get(*k).is_some_and(is_number))
                })
        }
        "errno_counts" => v.as_object().is_some_and(|m| {
            m.iter().all(|(k, n)| {
                let errno = (k.starts_with('E') && k[1..].chars().all(|c| c.is_ascii_uppercase()))
                    || k.strip_prefix("errno")
                        .is_some_and(|d| d.parse::<u32>().is_ok());
                errno && is_count(n)
            })
        }),
        "row_list" => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
        "kernel_stages_or_null" => {
            v.is_null()
                || ["samples", "missing", "clock_steps"]
                    .iter()
                    .all(|k| v.get(*k).is_some_and(is_count))
                    && v["stages"].as_array().is_some_and(|a| {
                        !a.is_empty()
                            && a.iter().all(|s| {
                                s["stage"].is_string()
                                    && ["p50", "p90", "p99", "p999", "max", "mean"]
                                        .iter()
                                        .all(|k| s.get(*k).is_some_and(is_number))
                            })
                    })
        }
        "peer_list" => v.as_array().is_some_and(|a| {
            a.iter()
                .all(|p| p.get("addr").is_some_and(Value::is_string))
        }),
        other => return Err(format!("the vocabulary names an unknown type {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("is {v}, not {ty}"))
    }
}

/// Types whose keys are data (errno names, DNS rcodes), not names.
fn is_map(ty: &str) -> bool {
    matches!(ty, "errno_counts" | "label_counts")
}

fn walk(v: &Value, path: &str, voc: &Value, errs: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{path}.{k}");
                if let Some(instead) = voc["retired"].get(k) {
                    errs.push(format!("{here}: a retired name; use {instead}"));
                    continue;
                }
                let Some(ty) = voc["names"].get(k).and_then(|e| e["type"].as_str()) else {
                    errs.push(format!(
                        "{here}: `{k}` is not in the vocabulary (= {x}): list it with its type and meaning"
                    ));
                    walk(x, &here, voc, errs);
                    continue;
                };
                if let Err(e) = has_type(ty, x) {
                    errs.push(format!("{here} {e}"));
                }
                if !is_map(ty) {
                    walk(x, &here, voc, errs);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{path}[{i}]"), voc, errs);
            }
        }
        _ => {}
    }
}

/// Panics, listing every breach, unless `doc` (the output of `command`,
/// e.g. "mcast ping") keeps to the vocabulary.
pub fn check(command: &str, doc: &Value) {
    let voc = vocabulary();
    let mut errs = Vec::new();
    for k in voc["every_document"].as_array().unwrap() {
        if doc.get(k.as_str().unwrap()).is_none() {
            errs.push(format!("no `{k}`"));
        }
    }
    if doc.get("schema") != voc.get("schema") {
        errs.push(format!(
            "schema is {:?}, the vocabulary's is {}",
            doc.get("schema"),
            voc["schema"]
        ));
    }
    if let Some(c) = doc.get("command")
        && c != command
    {
        errs.push(format!("command is {c}, expected {command}"));
    }
    walk(doc, "", &voc, &mut errs);
    assert!(
        errs.is_empty(),
        "`udpring {command} --json` breaks tools/udpring/json-vocabulary.json:\n  {}\n{doc}",
        errs.join("\n  ")
    );
}

/// [`check`] for a document whose command the caller does not know: the
/// document must still name one.
pub fn check_any(doc: &Value) {
    let c = doc
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or("(no command)");
    check(c, doc);
}

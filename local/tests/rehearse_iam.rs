//! The deploy rehearsal enforces each function's IAM policy from `infra/template.yaml` (moto's
//! server with IAM on; each function runs as a role holding exactly its `Policies`): a policy
//! without an action its function needs fails the rehearsal, naming the function and the action.
//!
//! Needs what `quiver-local rehearse` needs: PostgreSQL's and Valkey's binaries and `moto_server`
//! (local/bootstrap.sh installs them); a missing one fails the test, naming it.

mod common;

use std::path::PathBuf;

use serde_yaml::Value;

/// `health` probes the bucket with HeadBucket, which IAM authorizes as s3:ListBucket.
#[test]
fn a_policy_without_an_action_its_function_needs_fails_the_rehearsal_naming_both() {
    let narrowed = template_without("Health", "s3:ListBucket");
    let out = rehearse_health(Some(&narrowed));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the rehearsal passed without s3:ListBucket:\n{stderr}");
    assert!(
        stderr.contains("health: IAM refused s3:ListBucket on arn:aws:s3:::quiver-rehearsal-url"),
        "the failure should name the function, the action and the resource:\n{stderr}"
    );
}

#[test]
fn the_template_policy_of_health_is_enough() {
    let out = rehearse_health(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("IAM refused none of their requests"), "{stderr}");
}

fn rehearse_health(template: Option<&PathBuf>) -> std::process::Output {
    let mut cmd = common::quiver_local();
    cmd.args(["rehearse", "--only", "health", "--pass", "url"]).current_dir(common::repo_root());
    if let Some(t) = template {
        cmd.arg("--template").arg(t);
    }
    cmd.output().expect("running quiver-local rehearse")
}

/// A copy of `infra/template.yaml` in which `function`'s policy no longer grants `action` (a
/// statement left with no action goes too).
fn template_without(function: &str, action: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::repo_root().join("infra/template.yaml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    let policies = doc["Resources"][function]["Properties"]["Policies"]
        .as_sequence_mut()
        .unwrap_or_else(|| panic!("{function} has no Policies"));
    let mut removed = false;
    for policy in policies.iter_mut() {
        let Some(statements) = policy.get_mut("Statement").and_then(Value::as_sequence_mut) else {
            continue;
        };
        for s in statements.iter_mut() {
            match &mut s["Action"] {
                Value::Sequence(actions) => actions.retain(|a| {
                    removed |= a == action;
                    a != action
                }),
                a if *a == action => {
                    *a = Value::Sequence(vec![]);
                    removed = true;
                }
                _ => {}
            }
        }
        statements.retain(|s| s["Action"] != Value::Sequence(vec![]));
    }
    policies.retain(|p| p.get("Statement").is_none_or(|s| s != &Value::Sequence(vec![])));
    assert!(removed, "{function}'s policy does not grant {action}");

    let dir = std::env::temp_dir().join(format!("quiver-rehearse-iam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("template-without-{}.yaml", action.replace(':', "-")));
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

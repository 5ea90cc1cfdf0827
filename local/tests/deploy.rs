//! The deploy contract, checked offline (nothing here calls AWS): `infra/template.yaml` has one
//! Lambda per crate in `functions/`, an HTTP API route for every route in the README's endpoint
//! table, and policies no wider than each function needs. `cfn-lint infra/template.yaml` checks
//! the CloudFormation itself, and `infra/package.sh` checks each zip against its size budget.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use quiver_local::template::{intrinsic, sub_text, Template};
use serde_yaml::Value;

/// Functions that only read the bucket (snapshots, indexes): a write grant is a defect.
const READ_ONLY: &[&str] = &["analytics", "search"];
/// Routes that write in bulk or rebuild the published data.
const ADMIN_ROUTES: &[&str] = &["POST /events/bulk", "POST /snapshot", "POST /index"];
/// Functions that link DuckDB or Polars: at least 1769 MB, which is one full vCPU.
const HEAVY: &[&str] = &["analytics", "snapshot", "process", "pg-benchmark"];

#[test]
fn every_function_crate_has_one_lambda_and_every_lambda_a_crate() {
    let template = Template::load(&repo()).unwrap();
    let lambdas: BTreeSet<String> = template.functions().into_keys().collect();
    let crates = function_crates();

    let missing: Vec<_> = crates.difference(&lambdas).collect();
    assert!(missing.is_empty(), "functions/ crates with no AWS::Serverless::Function in infra/template.yaml: {missing:?}; copy a function block");
    let orphans: Vec<_> = lambdas.difference(&crates).collect();
    assert!(
        orphans.is_empty(),
        "infra/template.yaml deploys {orphans:?}, which have no crate under functions/"
    );

    for (name, f) in template.functions() {
        assert_eq!(f.id, pascal_case(&name), "the resource for `{name}` should be named after it");
        assert_eq!(
            sub_text(&f.props["FunctionName"]).as_deref(),
            Some(format!("${{AWS::StackName}}-{name}").as_str()),
            "{}: FunctionName",
            f.id
        );
    }
}

#[test]
fn every_route_in_the_readme_reaches_its_function_through_the_api() {
    let template = Template::load(&repo()).unwrap();
    let api = template.api_routes();
    let readme = readme_routes();
    assert!(
        !readme.is_empty(),
        "found no `| `name` | `METHOD /path` |` rows under README.md's ## Endpoints"
    );

    for (function, route) in readme {
        match api.get(&route) {
            Some(target) => assert_eq!(target, &function, "README.md sends `{route}` to {function}; the HTTP API sends it to {target}"),
            None => panic!("README.md lists `{route}` ({function}); infra/template.yaml has no AWS::ApiGatewayV2::Route for it"),
        }
    }
}

#[test]
fn each_function_is_granted_no_more_than_it_needs() {
    let template = Template::load(&repo()).unwrap();
    let mut problems = Vec::new();
    for (name, f) in template.functions() {
        problems
            .extend(policy_problems(&name, f.props).into_iter().map(|p| format!("{name}: {p}")));
    }
    assert!(problems.is_empty(), "infra/template.yaml:\n{}", problems.join("\n"));
}

/// The check above passes on today's template, so show that it catches what it is for.
#[test]
fn the_policy_check_catches_wide_grants() {
    let props = |yaml: &str| serde_yaml::from_str::<Value>(yaml).unwrap();
    let wide = props(
        r#"
        Policies:
          - Statement:
              - Effect: Allow
                Action: s3:*
                Resource: !Sub "${Bucket.Arn}/snapshots/*"
              - Effect: Allow
                Action: s3:GetObject
                Resource: "*"
              - Effect: Allow
                Action: [s3:GetObject, s3:PutObject]
                Resource: !Sub "${Bucket.Arn}/*"
          - S3CrudPolicy:
              BucketName: !Ref Bucket
        "#,
    );
    let problems = policy_problems("search", &wide).join("\n");
    for expected in [
        "grants s3:*",
        "Resource \"*\"",
        "the whole bucket",
        "read-only but is granted s3:PutObject",
        "S3CrudPolicy",
    ] {
        assert!(problems.contains(expected), "expected {expected:?} among:\n{problems}");
    }

    let scoped = props(
        r#"
        Policies:
          - Statement:
              - Effect: Allow
                Action: s3:GetObject
                Resource: !Sub "${Bucket.Arn}/indexes/*"
              - Effect: Allow
                Action: s3:ListBucket
                Resource: !GetAtt Bucket.Arn
                Condition: { StringLike: { "s3:prefix": "indexes/*" } }
        "#,
    );
    assert_eq!(policy_problems("search", &scoped), Vec::<String>::new());
}

#[test]
fn functions_run_on_arm64_al2023_with_json_logs_and_tracing() {
    let template = Template::load(&repo()).unwrap();
    let globals = &template.doc["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["Architectures"], Value::Sequence(vec!["arm64".into()]));
    assert_eq!(globals["Tracing"], "Active");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");

    for (name, f) in template.functions() {
        // `cargo lambda deploy` reads the crate's [package.metadata.lambda.deploy]: SAM gives the
        // same timeout and at least that memory (more where a full vCPU is wanted).
        let deploy = lambda_deploy_metadata(&name);
        let (memory, timeout) =
            (f.props["MemorySize"].as_u64().unwrap_or(0), f.props["Timeout"].as_u64());
        if let Some(wanted) = deploy.get("timeout") {
            assert_eq!(
                timeout,
                Some(*wanted),
                "{}.Timeout differs from functions/{name}/Cargo.toml's timeout",
                f.id
            );
        }
        if let Some(wanted) = deploy.get("memory") {
            assert!(
                memory >= *wanted,
                "{}.MemorySize {memory} is below functions/{name}/Cargo.toml's memory {wanted}",
                f.id
            );
        }
        if HEAVY.contains(&name.as_str()) {
            assert!(memory >= 1769, "{name} links DuckDB or Polars and needs MemorySize >= 1769 (one vCPU), has {memory}");
        }
    }
}

#[test]
fn urls_and_routes_are_behind_the_auth_type_parameter_which_defaults_to_iam() {
    let template = Template::load(&repo()).unwrap();
    let auth = &template.doc["Parameters"]["AuthType"];
    assert_eq!(auth["Default"], "AWS_IAM");
    assert_eq!(auth["AllowedValues"], serde_yaml::from_str::<Value>("[AWS_IAM, NONE]").unwrap());

    for (name, f) in template.functions() {
        let public = ["PublicUrl", "PublicInvoke"].map(|suffix| format!("{}{suffix}", f.id));
        if f.props["FunctionUrlConfig"].is_null() {
            for id in &public {
                assert!(
                    template.doc["Resources"][id.as_str()].is_null(),
                    "{name} has no Function URL, so {id} grants nothing but noise"
                );
            }
            continue;
        }
        assert_eq!(
            intrinsic(&f.props["FunctionUrlConfig"]["AuthType"], "Ref"),
            Some(&"AuthType".into()),
            "{name}: Function URL AuthType"
        );
        // SAM adds the public-access permissions only for a literal NONE, not for a parameter.
        for id in &public {
            let resource = &template.doc["Resources"][id.as_str()];
            assert_eq!(
                resource["Condition"], "PublicUrls",
                "{name}: {id} should exist, with Condition: PublicUrls"
            );
        }
    }
    for (id, route) in template.resources("AWS::ApiGatewayV2::Route") {
        let key = route["RouteKey"].as_str().unwrap_or_default();
        if ADMIN_ROUTES.contains(&key) {
            continue;
        }
        assert_eq!(
            intrinsic(&route["AuthorizationType"], "Ref"),
            Some(&"AuthType".into()),
            "{id}: AuthorizationType"
        );
    }
}

/// A Function URL is authorized per function, not per route: a route that writes in bulk or
/// rebuilds must not share a door with reads. These are served through the HTTP API only, with
/// IAM whatever `AuthType` says, so a policy can grant them to an admin principal alone.
#[test]
fn write_and_rebuild_routes_are_iam_only_and_their_functions_have_no_url() {
    let template = Template::load(&repo()).unwrap();
    let routes = template.api_routes();
    for admin in ADMIN_ROUTES {
        let function = routes
            .get(*admin)
            .unwrap_or_else(|| panic!("infra/template.yaml has no route {admin}"));
        let (id, route) = template
            .resources("AWS::ApiGatewayV2::Route")
            .find(|(_, r)| r["RouteKey"] == *admin)
            .unwrap();
        assert_eq!(
            route["AuthorizationType"], "AWS_IAM",
            "{id} ({admin}) must be AWS_IAM, not the AuthType parameter"
        );
        let f = &template.functions()[function.as_str()];
        assert!(f.props["FunctionUrlConfig"].is_null(), "{function} serves {admin}, so it must have no Function URL (a URL would let any caller of it rebuild or bulk-write)");
    }
    let policy = std::fs::read_to_string(repo().join("SECURITY.md")).unwrap();
    for admin in ADMIN_ROUTES {
        assert!(policy.contains(admin), "SECURITY.md should say who may call {admin}");
    }
}

#[test]
fn every_function_reserves_its_concurrency_through_a_parameter() {
    let template = Template::load(&repo()).unwrap();
    for (name, f) in template.functions() {
        let parameter = format!("{}Concurrency", f.id);
        let condition = format!("{}Unreserved", f.id);
        let reserved =
            intrinsic(&f.props["ReservedConcurrentExecutions"], "If").and_then(Value::as_sequence);
        let expected: Vec<Value> =
            serde_yaml::from_str(&format!("[{condition}, !Ref AWS::NoValue, !Ref {parameter}]"))
                .unwrap();
        assert_eq!(reserved, Some(&expected), "{name}: ReservedConcurrentExecutions: !If [{condition}, !Ref AWS::NoValue, !Ref {parameter}]");
        let p = &template.doc["Parameters"][parameter.as_str()];
        assert_eq!(p["Type"], "Number", "{name}: parameter {parameter}");
        assert!(
            p["Default"].as_u64().is_some_and(|n| n > 0),
            "{name}: {parameter} should default to a reservation"
        );
    }
}

/// What a browser client sends and reads: the cache and versioning headers must pass CORS.
#[test]
fn cors_lets_a_browser_send_and_read_quivers_headers() {
    let template = Template::load(&repo()).unwrap();
    let mut configs: Vec<(String, &Value)> =
        vec![("Api".into(), &template.doc["Resources"]["Api"]["Properties"]["CorsConfiguration"])];
    for (name, f) in template.functions() {
        if !f.props["FunctionUrlConfig"].is_null() {
            configs.push((format!("{name}'s Function URL"), &f.props["FunctionUrlConfig"]["Cors"]));
        }
    }
    for (what, cors) in configs {
        let allow =
            cors["AllowHeaders"].as_sequence().unwrap_or_else(|| panic!("{what}: no AllowHeaders"));
        for header in ["idempotency-key", "if-none-match", "content-type", "authorization"] {
            assert!(allow.contains(&header.into()), "{what}: AllowHeaders lacks {header}");
        }
        let expose = cors["ExposeHeaders"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{what}: no ExposeHeaders"));
        for header in [
            "etag",
            "x-cache",
            "x-data-version",
            "x-data-stale",
            "x-index-version",
            "x-request-id",
            "server-timing",
        ] {
            assert!(expose.contains(&header.into()), "{what}: ExposeHeaders lacks {header}");
        }
    }
}

#[test]
fn every_url_is_an_output() {
    let template = Template::load(&repo()).unwrap();
    let outputs = &template.doc["Outputs"];
    assert_eq!(intrinsic(&outputs["ApiUrl"]["Value"], "GetAtt"), Some(&"Api.ApiEndpoint".into()));
    for (name, f) in template.functions() {
        let output = format!("{}FunctionUrl", f.id);
        if f.props["FunctionUrlConfig"].is_null() {
            assert!(
                outputs[output.as_str()].is_null(),
                "{name} has no Function URL, so Outputs.{output} should not exist"
            );
            continue;
        }
        let value = format!("{}Url.FunctionUrl", f.id);
        assert_eq!(
            intrinsic(&outputs[output.as_str()]["Value"], "GetAtt"),
            Some(&value.into()),
            "{name}: Outputs.{output}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Reading the template, the workspace and the README.

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("local/ sits in the repository")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Crates under `functions/`.
fn function_crates() -> BTreeSet<String> {
    std::fs::read_dir(repo().join("functions"))
        .expect("functions/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `memory` and `timeout` from the crate's `[package.metadata.lambda.deploy]`, when it has them.
fn lambda_deploy_metadata(name: &str) -> BTreeMap<String, u64> {
    let manifest = read(&format!("functions/{name}/Cargo.toml"));
    let section = manifest.split("[package.metadata.lambda.deploy]").nth(1).unwrap_or_default();
    let section = section.split("\n[").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// `(function, "METHOD /path")` for each route in the README's `## Endpoints` table, e.g.
/// "| `health` | `GET /health` | ..." or "| `events` | `POST /events` · `GET /events/{user_id}` | ...".
/// A query string is not part of a route; a row with an empty first cell continues the row above.
fn readme_routes() -> Vec<(String, String)> {
    let readme = read("README.md");
    let endpoints =
        readme.split("\n## Endpoints").nth(1).expect("README.md has a ## Endpoints section");
    let endpoints = endpoints.split("\n## ").next().unwrap_or_default();
    let mut routes = Vec::new();
    let mut function = String::new();
    for line in endpoints.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(first), Some(second)) = (cells.get(1), cells.get(2)) else { continue };
        if let Some(name) = first.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
            function = name.to_string();
        }
        for code in second.split('`').skip(1).step_by(2) {
            let Some((method, path)) = code.split_once(' ') else { continue };
            if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) && path.starts_with('/')
            {
                let path = path.split('?').next().unwrap_or(path);
                routes.push((function.clone(), format!("{method} {path}")));
            }
        }
    }
    routes
}

fn pascal_case(name: &str) -> String {
    name.split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// The policy rules.

/// What is wrong with a function's `Policies` and its use of the database secret, one line each.
fn policy_problems(name: &str, props: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut reads_secret = false;
    let policies = match &props["Policies"] {
        Value::Sequence(items) => items.clone(),
        Value::Null => Vec::new(),
        single => vec![single.clone()],
    };
    for policy in &policies {
        match policy {
            Value::String(managed) => problems.push(format!(
                "managed policy {managed} is not scoped to this stack's bucket prefix or secret"
            )),
            Value::Mapping(m) if m.contains_key("Statement") => {
                let statements = match &m["Statement"] {
                    Value::Sequence(s) => s.clone(),
                    single => vec![single.clone()],
                };
                for statement in &statements {
                    problems.extend(statement_problems(name, statement));
                    reads_secret |= strings(&statement["Action"])
                        .iter()
                        .any(|a| a == "secretsmanager:GetSecretValue");
                }
            }
            Value::Mapping(m) => {
                for template in m.keys().filter_map(Value::as_str) {
                    match template {
                        "AWSSecretsManagerGetSecretValuePolicy" => reads_secret = true,
                        t if t.starts_with("S3") => {
                            problems.push(format!("SAM's {t} covers the whole bucket; write a Statement on the prefix instead"))
                        }
                        t => problems.push(format!("policy template {t} is not known to this check; write a Statement instead")),
                    }
                }
            }
            other => problems.push(format!("unexpected policy {other:?}")),
        }
    }
    let told_secret = !props["Environment"]["Variables"]["QUIVER_DATABASE_SECRET_ARN"].is_null();
    if told_secret && !reads_secret {
        problems.push("is given QUIVER_DATABASE_SECRET_ARN but may not read the secret".into());
    }
    if reads_secret && !told_secret {
        problems.push(
            "may read the database secret but is not given QUIVER_DATABASE_SECRET_ARN".into(),
        );
    }
    problems
}

fn statement_problems(name: &str, statement: &Value) -> Vec<String> {
    if statement["Effect"] == "Deny" {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let actions = strings(&statement["Action"]);
    for action in &actions {
        if action == "*" || action.ends_with(":*") {
            problems.push(format!("grants {action}"));
        }
        if READ_ONLY.contains(&name) && is_write(action) {
            problems.push(format!("{name} is read-only but is granted {action}"));
        }
    }
    let resources = match &statement["Resource"] {
        Value::Sequence(r) => r.clone(),
        single => vec![single.clone()],
    };
    for resource in &resources {
        if resource == "*" {
            problems.push(format!(
                "Resource \"*\" for {actions:?}: name the bucket prefix or the secret"
            ));
        }
        // Object actions on "<bucket>/*" reach every prefix; each function has one it needs.
        let on_objects = actions
            .iter()
            .any(|a| a.starts_with("s3:") && a != "s3:ListBucket" && a != "s3:GetBucketLocation");
        if let Some(text) = sub_text(resource).or_else(|| resource.as_str().map(str::to_string)) {
            if on_objects
                && (text.ends_with("}/*") || text.ends_with(":::*") || text.ends_with("/**"))
            {
                problems.push(format!(
                    "{actions:?} on {text}, the whole bucket, where a prefix would do"
                ));
            }
        }
    }
    problems
}

/// Put, Delete, and the rest of what changes a bucket or a secret.
fn is_write(action: &str) -> bool {
    let verb = action.split_once(':').map(|(_, v)| v).unwrap_or(action);
    action == "*"
        || verb == "*"
        || [
            "Put",
            "Delete",
            "Abort",
            "Restore",
            "Replicate",
            "Create",
            "Update",
            "Write",
            "Tag",
            "Untag",
            "Bypass",
        ]
        .iter()
        .any(|w| verb.starts_with(w))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => {
            items.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        _ => Vec::new(),
    }
}

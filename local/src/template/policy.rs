//! A function's `Policies`, as the IAM policy SAM attaches to its execution role: the deploy
//! rehearsal grants exactly this to the role each function runs as, so a missing action fails
//! there rather than in AWS.
//!
//! Inline `Statement`s are taken as written; SAM policy templates are expanded from SAM's own
//! definitions (samtranslator's `policy_templates.json`). A managed policy or a template without a
//! definition here is an error that names it. SAM's own additions to the role (logs, VPC
//! interfaces, X-Ray) are left out: the rehearsal's services do not ask for them.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value as Json};
use serde_yaml::Value;

use super::{intrinsic, Deployment, Function};

impl Deployment<'_> {
    /// The policy document (`{"Version", "Statement": [...]}`) for the function's `Policies`, with
    /// every reference resolved to its local stand-in.
    pub fn policy(&self, f: &Function<'_>) -> Result<Json> {
        let policies = match &f.props["Policies"] {
            Value::Null => vec![],
            Value::Sequence(items) => items.iter().collect(),
            single => vec![single],
        };
        let mut statements = Vec::new();
        for (i, policy) in policies.into_iter().enumerate() {
            let at = || format!("{}: Policies[{i}]", f.id);
            match policy {
                Value::String(managed) => bail!(
                    "{}: managed policy {managed} cannot be rehearsed; write its statements instead",
                    at()
                ),
                Value::Mapping(m) if m.contains_key("Statement") => {
                    match self.json(&m["Statement"]).with_context(at)? {
                        Json::Array(list) => statements.extend(list),
                        one => statements.push(one),
                    }
                }
                Value::Mapping(m) if m.len() == 1 => {
                    let (name, params) = m.iter().next().expect("one entry");
                    let name = name.as_str().unwrap_or_default();
                    statements.extend(self.sam_template(name, params).with_context(at)?);
                }
                other => bail!("{}: expected a Statement or a SAM policy template, got {other:?}", at()),
            }
        }
        Ok(json!({"Version": "2012-10-17", "Statement": statements}))
    }

    /// A SAM policy template's statements, from SAM's definition of it.
    fn sam_template(&self, name: &str, params: &Value) -> Result<Vec<Json>> {
        let param = |p: &str| {
            self.value(&params[p])?.with_context(|| format!("{name} needs its {p} parameter"))
        };
        match name {
            // "Grants permissions to GetSecretValue for the specified AWS Secrets Manager secret"
            "AWSSecretsManagerGetSecretValuePolicy" => Ok(vec![json!({
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": param("SecretArn")?,
            })]),
            _ => bail!(
                "SAM policy template {name} has no translation in the rehearsal: add its \
                 definition from SAM's policy_templates.json to local/src/template/policy.rs"
            ),
        }
    }

    /// A YAML value as JSON, each intrinsic (`!Sub`, `!GetAtt`, `!Ref`, `!If`) resolved; an
    /// `AWS::NoValue` in a list leaves the item out.
    fn json(&self, v: &Value) -> Result<Json> {
        let is_intrinsic = match v {
            Value::Tagged(_) => true,
            Value::Mapping(m) if m.len() == 1 => m
                .keys()
                .next()
                .and_then(Value::as_str)
                .is_some_and(|k| k == "Ref" || k.starts_with("Fn::")),
            _ => false,
        };
        if is_intrinsic {
            // `!If` may choose a list or a map; anything else resolves to text.
            if let Some(Value::Sequence(args)) = intrinsic(v, "If") {
                let [cond, yes, no] = args.as_slice() else {
                    bail!("!If takes [condition, then, else]")
                };
                let cond = cond.as_str().context("!If's condition is a name")?;
                return self.json(if self.condition(cond)? { yes } else { no });
            }
            return Ok(self.value(v)?.map(Json::from).unwrap_or(Json::Null));
        }
        Ok(match v {
            Value::Sequence(items) => Json::Array(
                items
                    .iter()
                    .map(|i| self.json(i))
                    .filter(|i| !matches!(i, Ok(Json::Null)))
                    .collect::<Result<_>>()?,
            ),
            Value::Mapping(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| {
                        let k = k.as_str().context("a policy key is a string")?;
                        Ok((k.to_string(), self.json(v).with_context(|| k.to_string())?))
                    })
                    .collect::<Result<_>>()?,
            ),
            other => self.value(other)?.map(Json::from).unwrap_or(Json::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Template;
    use super::*;

    const DOC: &str = r#"
Parameters:
  CreateDatabase: { Type: String, Default: "false" }
  DatabaseSecretArn: { Type: String, Default: "arn:url" }
Conditions:
  CreateDb: !Equals [!Ref CreateDatabase, "true"]
Resources:
  Snapshot:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/snapshot/bootstrap.zip
      Policies:
        - AWSSecretsManagerGetSecretValuePolicy:
            SecretArn: !If [CreateDb, !Ref DatabaseSecret, !Ref DatabaseSecretArn]
        - Statement:
            - Effect: Allow
              Action: [s3:GetObject, s3:PutObject]
              Resource: !Sub "${Bucket.Arn}/snapshots/*"
            - Effect: Allow
              Action: s3:ListBucket
              Resource: !GetAtt Bucket.Arn
              Condition:
                StringLike:
                  s3:prefix: snapshots/*
  Process:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/process/bootstrap.zip
  Wide:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/wide/bootstrap.zip
      Policies:
        - S3CrudPolicy:
            BucketName: !Ref Bucket
"#;

    #[test]
    fn statements_and_sam_templates_become_one_resolved_policy() {
        let t = Template { doc: serde_yaml::from_str(DOC).unwrap() };
        let d = Deployment::new(
            &t,
            &[("CreateDatabase", "true")],
            &[("DatabaseSecret", "arn:json"), ("Bucket.Arn", "arn:aws:s3:::b")],
        )
        .unwrap();
        let functions = t.functions();
        assert_eq!(
            d.policy(&functions["snapshot"]).unwrap(),
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": "arn:json"},
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::b/snapshots/*"},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
                 "Condition": {"StringLike": {"s3:prefix": "snapshots/*"}}},
            ]})
        );
        assert_eq!(d.policy(&functions["process"]).unwrap()["Statement"], json!([]));
    }

    #[test]
    fn a_template_without_a_translation_is_an_error_that_names_it() {
        let t = Template { doc: serde_yaml::from_str(DOC).unwrap() };
        let d = Deployment::new(&t, &[], &[]).unwrap();
        let e = format!("{:#}", d.policy(&t.functions()["wide"]).unwrap_err());
        assert!(e.contains("Wide: Policies[0]") && e.contains("S3CrudPolicy"), "{e}");
    }
}

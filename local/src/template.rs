//! `infra/template.yaml`, read the way CloudFormation reads it: the offline deploy test
//! (`local/tests/deploy.rs`) checks its shape, and the deploy rehearsal (`quiver-local rehearse`)
//! starts each function with the environment, memory and timeout it gives.
//!
//! CloudFormation's short tags (`!Ref`, `!Sub`, `!GetAtt`, `!If`) are kept as tagged values.
//! [`Deployment`] resolves them for one choice of parameters, with the stack's resources mapped to
//! local stand-ins; a reference it cannot resolve is an error that names it, so the template and
//! the rehearsal cannot drift apart quietly. [`Deployment::policy`] turns a function's `Policies`
//! into the IAM policy its role gets.

mod policy;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;

/// `infra/template.yaml`, parsed.
pub struct Template {
    pub doc: Value,
}

/// A Lambda in the template: its logical ID and its Properties.
pub struct Function<'a> {
    pub id: &'a str,
    pub props: &'a Value,
}

impl Template {
    /// Reads `infra/template.yaml` under `root`.
    pub fn load(root: &Path) -> Result<Self> {
        Self::load_file(&root.join("infra/template.yaml"))
    }

    /// Reads a template from `path`: a changed copy of `infra/template.yaml`, for example.
    pub fn load_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Template {
            doc: serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not YAML", path.display()))?,
        })
    }

    /// `(logical ID, Properties)` of every resource of type `ty`.
    pub fn resources<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        let resources = self.doc["Resources"].as_mapping().expect("Resources is a mapping");
        resources.iter().filter(move |(_, r)| r["Type"] == ty).map(|(id, r)| {
            let id = id.as_str().expect("a logical ID is a string");
            assert!(r["Properties"].is_mapping(), "{id} has no Properties");
            (id, &r["Properties"])
        })
    }

    /// The Lambdas by crate name, which is read from `CodeUri: ../target/lambda/<name>/bootstrap.zip`.
    pub fn functions(&self) -> BTreeMap<String, Function<'_>> {
        self.resources("AWS::Serverless::Function")
            .map(|(id, props)| {
                let uri = props["CodeUri"].as_str().unwrap_or_default();
                let name = uri
                    .strip_prefix("../target/lambda/")
                    .and_then(|rest| rest.strip_suffix("/bootstrap.zip"))
                    .unwrap_or_else(|| panic!("{id}: CodeUri {uri:?} should be ../target/lambda/<name>/bootstrap.zip (what infra/package.sh leaves)"));
                (name.to_string(), Function { id, props })
            })
            .collect()
    }

    /// `"GET /health"` -> `"health"`: every HTTP API route and the function its integration calls.
    pub fn api_routes(&self) -> BTreeMap<String, String> {
        let by_id: BTreeMap<&str, String> =
            self.functions().into_iter().map(|(name, f)| (f.id, name)).collect();
        let integrations: BTreeMap<&str, &str> = self
            .resources("AWS::ApiGatewayV2::Integration")
            .map(|(id, i)| {
                assert_eq!(i["PayloadFormatVersion"], "2.0", "{id}: PayloadFormatVersion");
                let target = intrinsic(&i["IntegrationUri"], "GetAtt")
                    .and_then(Value::as_str)
                    .and_then(|t| t.strip_suffix(".Arn"));
                (
                    id,
                    target.unwrap_or_else(|| {
                        panic!("{id}: IntegrationUri should be !GetAtt <Function>.Arn")
                    }),
                )
            })
            .collect();
        self.resources("AWS::ApiGatewayV2::Route")
            .map(|(id, route)| {
                let key = route["RouteKey"].as_str().unwrap_or_else(|| panic!("{id}: RouteKey"));
                let integration = sub_text(&route["Target"]).and_then(|t| t.strip_prefix("integrations/${")?.strip_suffix('}').map(str::to_string));
                let function = integration
                    .as_deref()
                    .and_then(|i| integrations.get(i))
                    .and_then(|f| by_id.get(f))
                    .unwrap_or_else(|| panic!("{id}: Target should be !Sub integrations/${{<Function>Integration}} of a function"));
                (key.to_string(), function.clone())
            })
            .collect()
    }

    /// A function's property at `path` (`["LoggingConfig", "LogFormat"]`), or the
    /// `Globals.Function` one: SAM merges the two maps, the function's keys winning.
    pub fn property<'a>(&'a self, function: &Function<'a>, path: &[&str]) -> &'a Value {
        let lookup = |mut v: &'a Value| {
            for key in path {
                v = &v[*key];
            }
            v
        };
        match lookup(function.props) {
            Value::Null => lookup(&self.doc["Globals"]["Function"]),
            v => v,
        }
    }
}

/// The value inside `!Name x` (or its long form `{"Fn::Name": x}`, `{"Ref": x}`).
pub fn intrinsic<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Tagged(t) if t.tag == name => Some(&t.value),
        Value::Mapping(m) if m.len() == 1 => {
            m.get(if name == "Ref" { name.to_string() } else { format!("Fn::{name}") })
        }
        _ => None,
    }
}

/// The text of a `!Sub "..."`.
pub fn sub_text(v: &Value) -> Option<String> {
    intrinsic(v, "Sub").and_then(Value::as_str).map(str::to_string)
}

/// The template with its parameters chosen and its resources standing for local services: what
/// a function would be given if the stack were deployed with those parameters.
pub struct Deployment<'a> {
    pub template: &'a Template,
    params: BTreeMap<String, String>,
    /// `Ref` and `GetAtt` values of the stack's resources and pseudo parameters
    /// (`"Bucket"`, `"Cache.Endpoint.Address"`, `"AWS::Region"`).
    resources: BTreeMap<String, String>,
}

impl<'a> Deployment<'a> {
    /// Parameters take their `Default` unless `params` sets them; `resources` maps each resource
    /// reference the functions' settings use to its local stand-in.
    pub fn new(
        template: &'a Template,
        params: &[(&str, &str)],
        resources: &[(&str, &str)],
    ) -> Result<Self> {
        let mut chosen = BTreeMap::new();
        for (name, p) in template.doc["Parameters"].as_mapping().into_iter().flatten() {
            let name = name.as_str().context("a parameter name is a string")?;
            if let Some(default) = scalar(&p["Default"]) {
                chosen.insert(name.to_string(), default);
            }
        }
        for (name, value) in params {
            if template.doc["Parameters"][*name].is_null() {
                bail!("infra/template.yaml has no parameter {name}");
            }
            chosen.insert(name.to_string(), value.to_string());
        }
        let resources = resources.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(Deployment { template, params: chosen, resources })
    }

    /// The `Environment.Variables` the function gets, `Globals` merged under its own; a variable
    /// set to `AWS::NoValue` is left out.
    pub fn environment(&self, function: &Function<'_>) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        let layers = [
            &self.template.doc["Globals"]["Function"]["Environment"]["Variables"],
            &function.props["Environment"]["Variables"],
        ];
        for vars in layers {
            for (k, v) in vars.as_mapping().into_iter().flatten() {
                let k = k.as_str().context("a variable name is a string")?;
                match self
                    .value(v)
                    .with_context(|| format!("{}: Environment.Variables.{k}", function.id))?
                {
                    Some(v) => env.insert(k.to_string(), v),
                    None => env.remove(k),
                };
            }
        }
        Ok(env)
    }

    /// A whole-number property of the function (`MemorySize`, `Timeout`), or its `Globals` default.
    pub fn number(&self, function: &Function<'_>, name: &str) -> Result<u64> {
        let v = self.template.property(function, &[name]);
        let text = self.value(v)?.with_context(|| format!("{}: {name} is not set", function.id))?;
        text.parse()
            .with_context(|| format!("{}: {name} {text:?} is not a whole number", function.id))
    }

    /// Resolves a scalar or an intrinsic to text; `None` for `AWS::NoValue` or nothing at all.
    pub fn value(&self, v: &Value) -> Result<Option<String>> {
        if v.is_null() {
            return Ok(None);
        }
        if let Some(s) = scalar(v) {
            return Ok(Some(s));
        }
        if let Some(name) = intrinsic(v, "Ref") {
            let name = name.as_str().context("!Ref takes a name")?;
            return if name == "AWS::NoValue" { Ok(None) } else { self.reference(name).map(Some) };
        }
        if let Some(att) = intrinsic(v, "GetAtt") {
            let att = match att {
                Value::Sequence(parts) => {
                    parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(".")
                }
                other => other.as_str().context("!GetAtt takes Resource.Attribute")?.to_string(),
            };
            return self.reference(&att).map(Some);
        }
        if let Some(text) = sub_text(v) {
            return self.substitute(&text).map(Some);
        }
        if let Some(Value::Sequence(args)) = intrinsic(v, "If") {
            let [cond, yes, no] = args.as_slice() else {
                bail!("!If takes [condition, then, else]")
            };
            let cond = cond.as_str().context("!If's condition is a name")?;
            return self.value(if self.condition(cond)? { yes } else { no });
        }
        bail!("cannot resolve {v:?} locally")
    }

    fn reference(&self, name: &str) -> Result<String> {
        if let Some(v) = self.params.get(name).or_else(|| self.resources.get(name)) {
            return Ok(v.clone());
        }
        bail!("{name} has no local stand-in in the rehearsal; map it in quiver-local's rehearse module")
    }

    /// `${Name}` and `${Resource.Attribute}` in a `!Sub` text.
    fn substitute(&self, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end =
                rest[start..].find('}').ok_or_else(|| anyhow!("unclosed ${{ in !Sub {text:?}"))?
                    + start;
            out.push_str(&self.reference(&rest[start + 2..end])?);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A named entry of `Conditions`, evaluated.
    pub fn condition(&self, name: &str) -> Result<bool> {
        let expr = &self.template.doc["Conditions"][name];
        if expr.is_null() {
            bail!("infra/template.yaml has no condition {name}");
        }
        self.truth(expr).with_context(|| format!("condition {name}"))
    }

    fn truth(&self, expr: &Value) -> Result<bool> {
        let list = |name| match intrinsic(expr, name) {
            Some(Value::Sequence(items)) => Some(items.as_slice()),
            _ => None,
        };
        if let Some([a, b]) = list("Equals") {
            return Ok(self.value(a)? == self.value(b)?);
        }
        if let Some([inner]) = list("Not") {
            return Ok(!self.truth(inner)?);
        }
        if let Some(items) = list("And") {
            return items.iter().try_fold(true, |all, c| Ok(all && self.truth(c)?));
        }
        if let Some(items) = list("Or") {
            return items.iter().try_fold(false, |any, c| Ok(any || self.truth(c)?));
        }
        if let Some(name) = intrinsic(expr, "Condition").and_then(Value::as_str) {
            return self.condition(name);
        }
        bail!("cannot evaluate {expr:?}")
    }
}

/// A string, number or boolean as CloudFormation passes it to a variable.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
Parameters:
  Level: { Type: String, Default: INFO }
  CreateDatabase: { Type: String, Default: "false" }
  SecretArn: { Type: String, Default: "" }
Conditions:
  CreateDb: !Equals [!Ref CreateDatabase, "true"]
  ExistingDb: !Not [!Condition CreateDb]
Globals:
  Function:
    MemorySize: 256
    Timeout: 10
    LoggingConfig:
      LogFormat: JSON
    Environment:
      Variables:
        RUST_LOG: !Ref Level
        DROPPED: x
Resources:
  Search:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/search/bootstrap.zip
      MemorySize: 1024
      LoggingConfig:
        LogGroup: !Ref Logs
      Environment:
        Variables:
          URL: !Sub rediss://${Cache.Endpoint.Address}:${Cache.Endpoint.Port}
          SECRET: !If [CreateDb, !Ref Attachment, !Ref SecretArn]
          BUCKET: !GetAtt Bucket.Arn
          DROPPED: !Ref AWS::NoValue
"#;

    fn stand_ins() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Cache.Endpoint.Address", "localhost"),
            ("Cache.Endpoint.Port", "6380"),
            ("Attachment", "arn:json"),
            ("Bucket.Arn", "arn:bucket"),
        ]
    }

    #[test]
    fn globals_merge_under_the_function_and_intrinsics_resolve() {
        let t = Template { doc: serde_yaml::from_str(DOC).unwrap() };
        let d = Deployment::new(&t, &[("CreateDatabase", "true")], &stand_ins()).unwrap();
        let functions = t.functions();
        let f = &functions["search"];
        let env = d.environment(f).unwrap();
        assert_eq!(env["RUST_LOG"], "INFO");
        assert_eq!(env["URL"], "rediss://localhost:6380");
        assert_eq!(env["SECRET"], "arn:json");
        assert_eq!(env["BUCKET"], "arn:bucket");
        assert!(!env.contains_key("DROPPED"), "AWS::NoValue removes the variable");
        assert_eq!(d.number(f, "MemorySize").unwrap(), 1024);
        assert_eq!(d.number(f, "Timeout").unwrap(), 10);
        assert_eq!(
            t.property(f, &["LoggingConfig", "LogFormat"]),
            "JSON",
            "Globals' map merges under the function's"
        );

        let d = Deployment::new(&t, &[("SecretArn", "arn:url")], &stand_ins()).unwrap();
        assert!(d.condition("ExistingDb").unwrap());
        assert_eq!(d.environment(f).unwrap()["SECRET"], "arn:url");
    }

    #[test]
    fn an_unmapped_reference_is_an_error_that_names_it() {
        let t = Template { doc: serde_yaml::from_str(DOC).unwrap() };
        let d = Deployment::new(&t, &[], &[]).unwrap();
        let e = format!("{:#}", d.environment(&t.functions()["search"]).unwrap_err());
        assert!(
            e.contains("Cache.Endpoint.Address") && e.contains("Environment.Variables.URL"),
            "{e}"
        );
        assert!(Deployment::new(&t, &[("Nope", "1")], &[]).is_err());
    }
}

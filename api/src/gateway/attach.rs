//! Which routes attach to which Services (GAMMA: parentRefs of kind
//! Service), with a verdict per Service parentRef for the route's status.

use std::collections::BTreeMap;

use serde_json::Value;

use super::precedence::{self, Ranked};
use super::translate::{self, TranslatedMatch};
use super::{
    AttachedRule, Attachment, ParentVerdict, RouteObject, RouteSpec, RouteVerdict, ServiceLookup,
    Services, Verdict,
};

/// An accepted match waiting to be ordered: (route index, match, port).
type Pending = (usize, TranslatedMatch, Option<u16>);

/// A parentRef, whichever route kind it comes from.
struct ParentRef {
    /// As written, for status.
    written: Value,
    namespace: String,
    name: String,
    port: Option<i32>,
    section_name: Option<String>,
}

/// Attaches every route to the Services its parentRefs name. Only
/// parentRefs of kind Service (group "" or "core") are Outrigger's: a route
/// with none gets no verdict (another controller owns its status).
pub fn attach(routes: &[RouteObject], services: &dyn Services) -> Attachment {
    let mut attachment = Attachment::default();
    // Per Service: (route index, match, port), ordered at the end.
    let mut attached: BTreeMap<(String, String), Vec<Pending>> = BTreeMap::new();
    for (index, object) in routes.iter().enumerate() {
        let parents = service_parents(object);
        if parents.is_empty() {
            continue;
        }
        let translated = translate::translate(object, services);
        let resolved_refs = resolved_refs(&translate::unresolved(object, services));
        let mut verdicts = Vec::new();
        // (Service, port) pairs this route attaches to; None covers every port.
        let mut ports: BTreeMap<(String, String), Vec<Option<u16>>> = BTreeMap::new();
        for parent in parents {
            let accepted = match (&translated, parent_port(object, &parent, services)) {
                (_, Err(verdict)) => verdict,
                (Err(message), _) => Verdict::fail("UnsupportedValue", message.clone()),
                (Ok(_), Ok(port)) => {
                    ports
                        .entry((parent.namespace.clone(), parent.name.clone()))
                        .or_default()
                        .push(port);
                    Verdict::ok(
                        "Accepted",
                        format!(
                            "attached to Service {}/{} ({})",
                            parent.namespace,
                            parent.name,
                            port.map_or("every port".into(), |p| format!("port {p}"))
                        ),
                    )
                }
            };
            verdicts.push(ParentVerdict {
                parent_ref: parent.written,
                accepted,
                resolved_refs: resolved_refs.clone(),
            });
        }
        if let Ok(matches) = &translated {
            for (service, mut service_ports) in ports {
                // A parentRef without a port already covers every port.
                if service_ports.contains(&None) {
                    service_ports = vec![None];
                }
                service_ports.sort();
                service_ports.dedup();
                let entry = attached.entry(service).or_default();
                for port in service_ports {
                    entry.extend(matches.iter().map(|m| (index, m.clone(), port)));
                }
            }
        }
        attachment.verdicts.push(RouteVerdict {
            kind: object.kind,
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            generation: object.generation,
            parents: verdicts,
        });
    }
    for (service, mut rules) in attached {
        rules.sort_by(|(a, ma, _), (b, mb, _)| {
            precedence::compare(&ranked(&routes[*a], ma), &ranked(&routes[*b], mb))
        });
        attachment.services.insert(
            service,
            rules
                .into_iter()
                .map(|(_, m, port)| AttachedRule {
                    port,
                    route: m.route,
                })
                .collect(),
        );
    }
    attachment
}

fn ranked<'a>(object: &'a RouteObject, m: &'a TranslatedMatch) -> Ranked<'a> {
    Ranked {
        object,
        rule: m.rule,
        index: m.index,
        r#match: &m.route.r#match,
    }
}

/// The route's parentRefs that name a Service.
fn service_parents(object: &RouteObject) -> Vec<ParentRef> {
    let written: Vec<Value> = match &object.spec {
        RouteSpec::Http(spec) => spec
            .parent_refs
            .iter()
            .flatten()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
        RouteSpec::Grpc(spec) => spec
            .parent_refs
            .iter()
            .flatten()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
    };
    written
        .into_iter()
        .filter_map(|written| {
            let field = |key: &str| written.get(key).and_then(Value::as_str).map(str::to_string);
            // Gateway API's defaults: group gateway.networking.k8s.io, kind Gateway.
            let group = field("group").unwrap_or_else(|| super::GROUP.into());
            let kind = field("kind").unwrap_or_else(|| "Gateway".into());
            if kind != "Service" || !matches!(group.as_str(), "" | "core") {
                return None;
            }
            Some(ParentRef {
                namespace: field("namespace").unwrap_or_else(|| object.namespace.clone()),
                name: field("name")?,
                port: written
                    .get("port")
                    .and_then(Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok()),
                section_name: field("sectionName"),
                written,
            })
        })
        .collect()
}

/// The Service port the parentRef attaches to (None: every port), or the
/// Accepted=False verdict saying why it cannot attach.
fn parent_port(
    object: &RouteObject,
    parent: &ParentRef,
    services: &dyn Services,
) -> Result<Option<u16>, Verdict> {
    let service = format!("{}/{}", parent.namespace, parent.name);
    if parent.namespace != object.namespace {
        return Err(Verdict::fail(
            "UnsupportedValue",
            format!(
                "Service {service} is in another namespace than the route: consumer routes \
                 are not supported yet (put the route in namespace {})",
                parent.namespace
            ),
        ));
    }
    let no_parent = |message: String| Err(Verdict::fail("NoMatchingParent", message));
    let port = match parent.port {
        None => None,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => return no_parent(format!("port {p} is not a port")),
        },
    };
    let ports = match services.lookup(&parent.namespace, &parent.name) {
        ServiceLookup::NotFound => return no_parent(format!("Service {service} not found")),
        ServiceLookup::Ports(ports) => Some(ports),
        ServiceLookup::Unknown => None,
    };
    let Some(section) = &parent.section_name else {
        return match (port, &ports) {
            (Some(p), Some(ports)) if !ports.iter().any(|sp| sp.port == p) => {
                no_parent(format!("Service {service} has no port {p}"))
            }
            _ => Ok(port),
        };
    };
    // sectionName names a Service port.
    let Some(ports) = ports else {
        return no_parent(format!(
            "sectionName {section}: the ports of Service {service} are not known \
             (give its Service document, or use port)"
        ));
    };
    match ports
        .iter()
        .find(|sp| sp.name.as_deref() == Some(section.as_str()))
    {
        None => no_parent(format!("Service {service} has no port named {section}")),
        Some(sp) if port.is_some_and(|p| p != sp.port) => no_parent(format!(
            "port {} and sectionName {section} (port {}) name different ports of Service {service}",
            port.unwrap_or_default(),
            sp.port
        )),
        Some(sp) => Ok(Some(sp.port)),
    }
}

fn resolved_refs(unresolved: &[translate::Unresolved]) -> Verdict {
    match unresolved.first() {
        None => Verdict::ok("ResolvedRefs", "all backendRefs resolved"),
        Some((reason, _)) => Verdict::fail(
            reason,
            unresolved
                .iter()
                .map(|(_, message)| message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

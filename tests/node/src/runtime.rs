//! One pod's life, as the kubelet leads it: network and files, init
//! containers in order (native sidecars started and waited for up to their
//! startup probe), app containers, restarts per restartPolicy with backoff,
//! probes, then either completion (sidecars stopped after the apps, phase
//! Succeeded/Failed) or deletion (SIGTERM, grace period, SIGKILL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::network::PodNet;
use crate::node::Node;
use crate::probes::{self, Action, Check, Verdict};
use crate::sandbox::Sandbox;
use crate::status::{self, State};
use crate::{env, images, volumes};

/// Which container of the pod: init containers (sidecars among them) or apps.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Init(usize),
    App(usize),
}

/// How a supervised container ended.
#[derive(Debug, PartialEq)]
enum Exit {
    Code(i32),
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    fn again(self, code: i32) -> bool {
        match self {
            Restart::Always => true,
            Restart::OnFailure => code != 0,
            Restart::Never => false,
        }
    }
}

/// What every container of one pod shares.
struct PodCtx {
    node: Arc<Node>,
    pod: Pod,
    net: PodNet,
    dir: PathBuf,
    state: watch::Sender<status::Pod>,
    grace: Duration,
}

impl PodCtx {
    fn update(&self, f: impl FnOnce(&mut status::Pod)) {
        self.state.send_modify(f);
    }

    fn container(&self, slot: Slot, f: impl FnOnce(&mut status::Container)) {
        self.update(|p| match slot {
            Slot::Init(i) => f(&mut p.init[i]),
            Slot::App(i) => f(&mut p.apps[i]),
        });
    }

    fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.as_ref().expect("pods have a spec")
    }

    /// Starts `c` in its sandbox (or `argv` there instead, for exec probes).
    async fn spawn(&self, c: &Container, argv: Option<&[String]>) -> Result<Child> {
        let node = &self.node;
        let image = images::resolve(
            &node.bin_dir,
            c.image.as_deref().unwrap_or_default(),
            c.command.as_deref(),
            c.args.as_deref(),
        )
        .context("image not in the table")?;
        let facts = env::Facts {
            pod: &self.pod,
            pod_ip: self.net.ip,
            host_ip: node.net.host_ip,
            node_name: &node.name,
        };
        let vars = env::resolve(&node.client, &facts, c).await?;
        let argv: Vec<String> = match argv {
            Some(a) => a.to_vec(),
            None => std::iter::once(image.program.to_string_lossy().into_owned())
                .chain(image.args.iter().map(|a| env::expand(a, &vars)))
                .collect(),
        };
        let pod_sc = self.spec().security_context.as_ref();
        let sc = c.security_context.as_ref();
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let names = |list: Option<&Vec<String>>| -> Vec<String> {
            list.into_iter()
                .flatten()
                .map(|c| c.to_lowercase().trim_start_matches("cap_").to_string())
                .collect()
        };
        let sandbox = Sandbox {
            netns: self.net.netns.clone(),
            binds: volumes::binds(&self.dir, c),
            run_as_user: sc
                .and_then(|s| s.run_as_user)
                .or(pod_sc.and_then(|s| s.run_as_user)),
            run_as_group: sc
                .and_then(|s| s.run_as_group)
                .or(pod_sc.and_then(|s| s.run_as_group)),
            caps_add: names(caps.and_then(|c| c.add.as_ref())),
            caps_drop: names(caps.and_then(|c| c.drop.as_ref())),
            working_dir: c.working_dir.as_ref().map(PathBuf::from),
            argv,
        };
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", c.name)))?;
        let hostname = self.pod.metadata.name.clone().unwrap_or_default();
        let child = tokio::process::Command::new(&node.self_exe)
            .arg("run-container")
            .arg(serde_json::to_string(&sandbox)?)
            .env_clear()
            .env("PATH", env::path(&node.bin_dir))
            .env("HOSTNAME", hostname)
            .envs(node.access.iter().flat_map(|a| a.env()))
            .envs(vars)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a SIGKILL takes its children too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        Ok(child)
    }

    /// One probe attempt.
    async fn attempt(&self, c: &Container, check: &Check) -> bool {
        match &check.action {
            Action::Exec { command } => {
                let Ok(mut child) = self.spawn(c, Some(command)).await else {
                    return false;
                };
                let done = tokio::time::timeout(check.timeout, child.wait()).await;
                if done.is_err() {
                    stop_child(&mut child, Duration::ZERO).await;
                }
                matches!(done, Ok(Ok(s)) if s.success())
            }
            action => probes::network(action, check.timeout).await,
        }
    }

    /// The startup probe, then readiness and liveness, while the container
    /// runs; cancels `unhealthy` when startup or liveness fails for good.
    async fn probe(&self, slot: Slot, c: &Container, unhealthy: CancellationToken) {
        let check = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
            p.and_then(|p| probes::check(c, p, self.net.ip))
        };
        if let Some(startup) = check(c.startup_probe.as_ref()) {
            tokio::time::sleep(startup.initial_delay).await;
            let mut failures = 0;
            while !self.attempt(c, &startup).await {
                failures += 1;
                if failures >= startup.failure_threshold {
                    unhealthy.cancel();
                    return;
                }
                tokio::time::sleep(startup.period).await;
            }
        }
        let readiness = check(c.readiness_probe.as_ref());
        self.container(slot, |s| {
            s.started = true;
            s.ready = readiness.is_none();
        });
        let ready_loop = async {
            let Some(check) = readiness else { return };
            tokio::time::sleep(check.initial_delay).await;
            let mut verdict = Verdict::new(false);
            loop {
                if let Some(ok) = verdict.record(&check, self.attempt(c, &check).await) {
                    tracing::debug!(container = %c.name, ip = %self.net.ip, ok, "readiness");
                    self.container(slot, |s| s.ready = ok);
                }
                tokio::time::sleep(check.period).await;
            }
        };
        let live_loop = async {
            let Some(check) = check(c.liveness_probe.as_ref()) else {
                return;
            };
            tokio::time::sleep(check.initial_delay).await;
            let mut verdict = Verdict::new(true);
            loop {
                if verdict.record(&check, self.attempt(c, &check).await) == Some(false) {
                    unhealthy.cancel();
                    return;
                }
                tokio::time::sleep(check.period).await;
            }
        };
        tokio::join!(ready_loop, live_loop);
    }

    /// Runs `c` until it ends for good per `policy`, or until `stop`.
    async fn supervise(
        &self,
        slot: Slot,
        c: &Container,
        policy: Restart,
        stop: &CancellationToken,
    ) -> Exit {
        let mut backoff = Duration::from_millis(500);
        loop {
            let began = Timestamp::now();
            let code = match self.spawn(c, None).await {
                Err(e) => {
                    tracing::warn!(container = %c.name, error = %format!("{e:#}"), "cannot start");
                    self.container(slot, |s| {
                        s.state = State::Waiting {
                            reason: "CreateContainerError".into(),
                            message: format!("{e:#}"),
                        }
                    });
                    128
                }
                Ok(mut child) => {
                    self.container(slot, |s| {
                        s.state = State::Running { since: began };
                        s.started = false;
                        s.ready = false;
                    });
                    let unhealthy = CancellationToken::new();
                    let outcome = tokio::select! {
                        status = child.wait() => status.ok(),
                        // Probes run as long as the container does.
                        _ = async {
                            self.probe(slot, c, unhealthy.clone()).await;
                            std::future::pending::<()>().await
                        } => None,
                        _ = unhealthy.cancelled() => None,
                        _ = stop.cancelled() => None,
                    };
                    let code = match outcome {
                        Some(status) => exit_code(status),
                        None => stop_child(&mut child, self.grace).await,
                    };
                    // Children it left behind in its group go with it.
                    if let Some(pid) = child.id() {
                        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    self.container(slot, |s| {
                        s.state = State::Terminated {
                            code,
                            reason: if code == 0 { "Completed" } else { "Error" }.into(),
                            started: began,
                            finished: Timestamp::now(),
                        };
                        s.ready = false;
                    });
                    if stop.is_cancelled() {
                        return Exit::Stopped;
                    }
                    code
                }
            };
            if !policy.again(code) {
                return Exit::Code(code);
            }
            self.container(slot, |s| {
                s.restarts += 1;
                s.last = Some(s.state.clone());
                s.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!("back-off {backoff:?} restarting failed container"),
                };
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return Exit::Stopped,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// SIGTERM, up to `grace` to exit, then SIGKILL to its group.
async fn stop_child(child: &mut Child, grace: Duration) -> i32 {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return exit_code(status);
        }
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    child.wait().await.map(exit_code).unwrap_or(137)
}

/// Writes the state as the pod's status on every change, until the runtime
/// drops the sender (after the last change).
async fn write_status(api: Api<Pod>, name: String, mut rx: watch::Receiver<status::Pod>) {
    loop {
        let current = rx.borrow_and_update().clone();
        let patch = serde_json::json!({ "status": current.to_status(Timestamp::now()) });
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "status not written");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A Warning Event about `pod`, as the kubelet records one.
async fn warn_event(node: &Node, pod: &Pod, reason: &str, message: &str) {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    let event = Event {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(format!(
                "{name}.{}",
                crate::controllers::suffix(crate::controllers::seed())
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        type_: Some("Warning".into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.name.clone()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(node.client.clone(), &ns);
    if let Err(e) = api.create(&kube::api::PostParams::default(), &event).await {
        tracing::debug!(pod = %name, error = %e, "event not recorded");
    }
}

/// Runs `pod` until it completes or `stop` (deletion, node shutdown).
pub async fn run(node: Arc<Node>, pod: Pod, stop: CancellationToken) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let fresh = |c: &Container| status::Container::new(&c.name, c.image.as_deref().unwrap_or(""));
    let initial = status::Pod {
        phase: "Pending",
        reason: None,
        message: None,
        pod_ip: None,
        host_ip: node.net.host_ip,
        start: Timestamp::now(),
        initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
        init: spec.init_containers.iter().flatten().map(fresh).collect(),
        apps: spec.containers.iter().map(fresh).collect(),
    };
    let (tx, rx) = watch::channel(initial);
    let writer = tokio::spawn(write_status(
        Api::namespaced(node.client.clone(), &ns),
        name.clone(),
        rx,
    ));
    let net = match node.net.add_pod() {
        Ok(net) => net,
        Err(e) => {
            tx.send_modify(|p| {
                p.phase = "Failed";
                p.reason = Some("NetworkSetupFailed".into());
                p.message = Some(format!("{e:#}"));
            });
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let dir = node
        .state_dir
        .join("pods")
        .join(format!("{ns}_{name}_{uid}"));
    tx.send_modify(|p| p.pod_ip = Some(net.ip));
    let ctx = Arc::new(PodCtx {
        node: node.clone(),
        pod: pod.clone(),
        net: net.clone(),
        dir: dir.clone(),
        state: tx,
        grace: Duration::from_secs(
            spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64
        ),
    });
    let prepared = async {
        std::fs::create_dir_all(&dir)?;
        tokio::task::block_in_place(|| node.attach(&uid, &ns, &name, &net, &dir))?;
        volumes::prepare_all(&node.client, &pod, &dir, node.access.as_ref()).await
    };
    match prepared.await {
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(pod = %name, error = %message, "volumes not prepared");
            warn_event(&node, &pod, "FailedMount", &message).await;
            ctx.update(|p| {
                p.reason = Some("ContainerCreating".into());
                p.message = Some(message);
            })
        }
        Ok(()) => {
            tokio::spawn(volumes::refresh_tokens(
                node.client.clone(),
                pod.clone(),
                dir.clone(),
                Duration::from_secs(300),
                stop.clone(),
            ));
            lifecycle(&ctx, &stop).await
        }
    }
    // A finished pod waits here until it is deleted, like its sandbox would.
    stop.cancelled().await;
    node.detach(&uid);
    node.net.remove_pod(&net);
    let _ = std::fs::remove_dir_all(&dir);
    drop(ctx);
    let _ = writer.await;
}

/// Containers by kind; any image not in the table stops the pod before it
/// starts, as an image pull failure would.
async fn lifecycle(ctx: &Arc<PodCtx>, stop: &CancellationToken) {
    let spec = ctx.spec().clone();
    let unknown: Vec<(Slot, &Container)> = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (Slot::Init(i), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (Slot::App(i), c)),
        )
        .filter(|(_, c)| {
            images::resolve(
                &ctx.node.bin_dir,
                c.image.as_deref().unwrap_or(""),
                None,
                None,
            )
            .is_none()
        })
        .collect();
    if !unknown.is_empty() {
        for (slot, c) in unknown {
            let message = format!(
                "image {:?} is not in the test node's image table (tests/node/src/images.rs)",
                c.image.as_deref().unwrap_or("")
            );
            ctx.container(slot, |s| {
                s.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message,
                }
            });
        }
        return;
    }
    let restart = match spec.restart_policy.as_deref() {
        Some("Never") => Restart::Never,
        Some("OnFailure") => Restart::OnFailure,
        _ => Restart::Always,
    };
    let init_policy = if restart == Restart::Never {
        Restart::Never
    } else {
        Restart::OnFailure
    };
    // Sidecars, each with its own stop, to end them in reverse order.
    let mut sidecars: Vec<(CancellationToken, tokio::task::JoinHandle<Exit>)> = Vec::new();
    let mut init_failed = None;
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let slot = Slot::Init(i);
        if c.restart_policy.as_deref() == Some("Always") {
            let token = CancellationToken::new();
            let (task_ctx, task_token, c2) = (ctx.clone(), token.clone(), c.clone());
            let handle = tokio::spawn(async move {
                task_ctx
                    .supervise(slot, &c2, Restart::Always, &task_token)
                    .await
            });
            sidecars.push((token, handle));
            let mut rx = ctx.state.subscribe();
            tokio::select! {
                _ = rx.wait_for(|p| p.init[i].started) => {}
                _ = stop.cancelled() => break,
            }
        } else {
            match ctx.supervise(slot, c, init_policy, stop).await {
                Exit::Code(0) => {}
                Exit::Code(code) => {
                    init_failed = Some((c.name.clone(), code));
                    break;
                }
                Exit::Stopped => break,
            }
        }
        // An init container may have changed the pod's iptables (a proxy's
        // redirect): put the Service rules back in their place.
        tokio::task::block_in_place(|| ctx.node.refresh_pod(&ctx.net.netns));
    }
    let mut failed = false;
    if let Some((name, code)) = init_failed {
        ctx.update(|p| {
            p.phase = "Failed";
            p.message = Some(format!("init container {name} exited with {code}"));
        });
        failed = true;
    } else if !stop.is_cancelled() {
        ctx.update(|p| {
            p.initialized = true;
            p.phase = "Running";
        });
        let apps_stop = CancellationToken::new();
        let apps: Vec<_> = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (ctx, token, c) = (ctx.clone(), apps_stop.clone(), c.clone());
                tokio::spawn(async move { ctx.supervise(Slot::App(i), &c, restart, &token).await })
            })
            .collect();
        let mut all = std::pin::pin!(futures_util::future::join_all(apps));
        let exits = tokio::select! {
            exits = &mut all => exits,
            _ = stop.cancelled() => {
                apps_stop.cancel();
                all.await
            }
        };
        if !stop.is_cancelled() {
            failed = exits.iter().any(|e| !matches!(e, Ok(Exit::Code(0))));
        }
    }
    for (token, handle) in sidecars.into_iter().rev() {
        token.cancel();
        let _ = handle.await;
    }
    if !stop.is_cancelled() {
        ctx.update(|p| p.phase = if failed { "Failed" } else { "Succeeded" });
    }
}

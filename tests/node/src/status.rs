//! The pod's state as the runtime tracks it, and the PodStatus it becomes.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        since: Timestamp,
    },
    Terminated {
        code: i32,
        reason: String,
        started: Timestamp,
        finished: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub state: State,
    /// The last run's end, shown as lastState after a restart.
    pub last: Option<State>,
    pub started: bool,
    pub ready: bool,
    pub restarts: i32,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            state: State::Waiting {
                reason: "PodInitializing".into(),
                message: String::new(),
            },
            last: None,
            started: false,
            ready: false,
            restarts: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub phase: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    pub start: Timestamp,
    pub initialized: bool,
    pub init: Vec<Container>,
    pub apps: Vec<Container>,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        State::Running { since } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*since)),
            }),
            ..Default::default()
        },
        State::Terminated {
            code,
            reason,
            started,
            finished,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *code,
                reason: Some(reason.clone()),
                started_at: Some(time(*started)),
                finished_at: Some(time(*finished)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_status(c: &Container) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("local://{}", c.image),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restarts,
        state: Some(state(&c.state)),
        last_state: c.last.as_ref().map(state),
        ..Default::default()
    }
}

fn condition(kind: &str, ok: bool, now: Timestamp) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(time(now)),
        ..Default::default()
    }
}

impl Pod {
    /// Containers ready: every app container and every running sidecar.
    pub fn containers_ready(&self) -> bool {
        let sidecars_ok = self
            .init
            .iter()
            .all(|c| c.ready || matches!(c.state, State::Terminated { .. }));
        self.initialized && sidecars_ok && self.apps.iter().all(|c| c.ready)
    }

    pub fn to_status(&self, now: Timestamp) -> PodStatus {
        let ready = self.containers_ready() && self.phase == "Running";
        PodStatus {
            phase: Some(self.phase.into()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            host_ip: Some(self.host_ip.to_string()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.to_string(),
            }]),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            pod_ips: self.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
            start_time: Some(time(self.start)),
            qos_class: Some("BestEffort".into()),
            conditions: Some(vec![
                condition("PodScheduled", true, now),
                condition("Initialized", self.initialized, now),
                condition("ContainersReady", ready, now),
                condition("Ready", ready, now),
            ]),
            init_container_statuses: Some(self.init.iter().map(container_status).collect()),
            container_statuses: Some(self.apps.iter().map(container_status).collect()),
            ..Default::default()
        }
    }
}

use super::*;

const S: Duration = Duration::from_secs(1);

fn machine() -> Machine {
    Machine::new(Settings {
        registration_id: "dev-7".into(),
        payload: None,
        poll_interval: 3 * S,
        response_timeout: 60 * S,
    })
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// The topic of the one publish in `actions`.
fn published(actions: &[Action]) -> String {
    let topics: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { topic, .. } => Some(topic.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(topics.len(), 1, "{actions:?}");
    topics[0].clone()
}

/// Connected and subscribed: the register request is out with `$rid=1`.
fn registering() -> Machine {
    let mut m = machine();
    m.connected(Duration::ZERO);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::Subscribe("$dps/registrations/res/#".into()),
            Action::WaitUntil(60 * S)
        ]
    );
    m.subscribed(S, true);
    let actions = drain(&mut m);
    assert_eq!(
        published(&actions),
        "$dps/registrations/PUT/iotdps-register/?$rid=1"
    );
    assert!(actions.contains(&Action::WaitUntil(61 * S)), "{actions:?}");
    m
}

const ASSIGNING: &[u8] = br#"{"operationId":"op.1","status":"assigning"}"#;
const ASSIGNED: &[u8] = br#"{"operationId":"op.1","status":"assigned","registrationState":
    {"assignedHub":"hub1.azure-devices.net","deviceId":"dev-7","status":"assigned"}}"#;

fn assignment() -> Assignment {
    Assignment::new(Some("hub1.azure-devices.net".into()), Some("dev-7".into())).unwrap()
}

#[test]
fn register_then_poll_after_retry_after_until_assigned() {
    let mut m = registering();
    m.message(
        2 * S,
        "$dps/registrations/res/202/?$rid=1&retry-after=2",
        ASSIGNING,
    );
    assert_eq!(drain(&mut m), vec![Action::WaitUntil(4 * S)]);
    m.timeout(4 * S);
    let actions = drain(&mut m);
    assert_eq!(
        published(&actions),
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op.1"
    );
    // Still assigning, without retry-after: the configured interval.
    m.message(5 * S, "$dps/registrations/res/202/?$rid=2", ASSIGNING);
    assert_eq!(drain(&mut m), vec![Action::WaitUntil(8 * S)]);
    m.timeout(8 * S);
    drain(&mut m);
    m.message(9 * S, "$dps/registrations/res/200/?$rid=3", ASSIGNED);
    assert_eq!(drain(&mut m), vec![Action::Done(assignment())]);
}

#[test]
fn the_payload_goes_with_the_register_request() {
    let mut m = Machine::new(Settings {
        registration_id: "dev-7".into(),
        payload: Some(serde_json::json!({"site": "A"})),
        poll_interval: S,
        response_timeout: S,
    });
    m.connected(Duration::ZERO);
    m.subscribed(Duration::ZERO, true);
    let body = drain(&mut m)
        .into_iter()
        .find_map(|a| match a {
            Action::Publish { payload, .. } => Some(payload),
            _ => None,
        })
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["payload"]["site"], "A");
}

#[test]
fn throttling_repeats_the_same_request_after_retry_after_and_says_so() {
    let mut m = registering();
    m.message(
        2 * S,
        "$dps/registrations/res/429/?$rid=1&retry-after=7",
        b"",
    );
    let actions = drain(&mut m);
    assert!(matches!(
        &actions[0],
        Action::Retrying(DpsError::Throttled { retry_after, .. }) if *retry_after == 7 * S
    ));
    assert_eq!(actions[1], Action::WaitUntil(9 * S));
    m.timeout(9 * S);
    assert_eq!(
        published(&drain(&mut m)),
        "$dps/registrations/PUT/iotdps-register/?$rid=2"
    );
}

#[test]
fn a_zero_retry_after_still_waits_a_second() {
    let mut m = registering();
    m.message(
        2 * S,
        "$dps/registrations/res/202/?$rid=1&retry-after=0",
        ASSIGNING,
    );
    assert_eq!(drain(&mut m), vec![Action::WaitUntil(3 * S)]);
}

#[test]
fn refusals_end_the_attempt_with_what_dps_said() {
    for (status, check) in [
        (401, "refused the credentials (401, errorCode 401002: bad)"),
        (
            404,
            "does not know this registration (404, errorCode 401002: bad)",
        ),
        (
            400,
            "rejected the registration request (400, errorCode 401002: bad)",
        ),
        (
            503,
            "failed to serve the request (503, errorCode 401002: bad)",
        ),
    ] {
        let mut m = registering();
        let topic = format!("$dps/registrations/res/{status}/?$rid=1");
        m.message(2 * S, &topic, br#"{"errorCode":401002,"message":"bad"}"#);
        let actions = drain(&mut m);
        let [Action::Failed(e)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert!(e.to_string().contains(check), "{e}");
    }
}

#[test]
fn a_failed_assignment_names_its_error_code() {
    let mut m = registering();
    m.message(
        2 * S,
        "$dps/registrations/res/200/?$rid=1",
        br#"{"operationId":"op.1","status":"failed","registrationState":
            {"status":"failed","errorCode":400209,"errorMessage":"no hub linked"}}"#,
    );
    let actions = drain(&mut m);
    let [Action::Failed(e)] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(e.failure(), crate::hub::Failure::Auth);
    assert!(
        e.to_string()
            .contains("registration is failed, errorCode 400209: no hub linked"),
        "{e}"
    );
}

#[test]
fn answers_to_other_requests_and_other_topics_are_ignored() {
    let mut m = registering();
    m.message(2 * S, "$dps/registrations/res/200/?$rid=9", ASSIGNED);
    m.message(2 * S, "devices/x/messages/devicebound/", b"{}");
    assert_eq!(drain(&mut m), vec![]);
    // Still waiting for the answer to $rid=1.
    m.message(3 * S, "$dps/registrations/res/200/?$rid=1", ASSIGNED);
    assert_eq!(drain(&mut m), vec![Action::Done(assignment())]);
}

#[test]
fn silence_past_the_response_timeout_fails_the_attempt() {
    let mut m = registering();
    m.timeout(61 * S);
    assert_eq!(
        drain(&mut m),
        vec![Action::Failed(DpsError::Timeout(60 * S))]
    );
}

#[test]
fn unreadable_or_incomplete_answers_fail_the_attempt() {
    for (topic, body) in [
        ("$dps/registrations/res/200/?$rid=1", &b"not json"[..]),
        (
            "$dps/registrations/res/202/?$rid=1",
            br#"{"status":"assigning"}"#,
        ),
        (
            "$dps/registrations/res/202/?$rid=1",
            br#"{"operationId":"a/#","status":"assigning"}"#,
        ),
        (
            "$dps/registrations/res/200/?$rid=1",
            br#"{"operationId":"o","status":"assigned"}"#,
        ),
        (
            "$dps/registrations/res/200/?$rid=1",
            br#"{"operationId":"o","status":"weird"}"#,
        ),
    ] {
        let mut m = registering();
        m.message(2 * S, topic, body);
        let actions = drain(&mut m);
        assert!(
            matches!(
                actions.as_slice(),
                [Action::Failed(DpsError::Unreadable(_))]
            ),
            "{topic} {actions:?}"
        );
    }
}

#[test]
fn a_refused_subscription_fails_the_attempt() {
    let mut m = machine();
    m.connected(Duration::ZERO);
    drain(&mut m);
    m.subscribed(S, false);
    assert_eq!(
        drain(&mut m),
        vec![Action::Failed(DpsError::SubscribeRefused)]
    );
}

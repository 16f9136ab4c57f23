//! State-machine tests of data and randomized splits, exit rules, operator exits, payload limits
//! and mappings, broken graphs, and what every transition records.

#[allow(clippy::wildcard_imports)] // the builders and imports of the parent test module
use super::*;

fn data_split_journey() -> Journey {
    let cond = |subject, op, value: Option<Json>| Condition { subject, op, value };
    Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![
                st(
                    "split",
                    StepKind::DataSplit(DataSplitStep {
                        branches: vec![
                            DataSplitBranch {
                                name: "VIP".into(),
                                conditions: vec![cond(
                                    ConditionSubject::Audience("vip".into()),
                                    ConditionOp::InAudience,
                                    None,
                                )],
                                next: nx("vip_send"),
                            },
                            DataSplitBranch {
                                name: "Big cart".into(),
                                conditions: vec![
                                    cond(
                                        ConditionSubject::Context("checkout_started.total".into()),
                                        ConditionOp::Gte,
                                        Some(json!(100)),
                                    ),
                                    cond(
                                        ConditionSubject::Trait("plan".into()),
                                        ConditionOp::Exists,
                                        None,
                                    ),
                                ],
                                next: nx("big_send"),
                            },
                        ],
                        else_next: None,
                    }),
                ),
                send("vip_send", None),
                send("big_send", None),
            ],
        ),
    )
}

#[test]
fn data_split_first_match_wins_else_everyone_else() {
    let j = data_split_journey();
    let e = event("checkout_started", json!({"total": 150}));
    let inst = Instance::new(
        &j,
        "i1".into(),
        &e,
        Admission {
            profile_id: "u1".into(),
            unique_value: None,
        },
        t0(),
    );
    let traits = json!({"plan": "pro"});
    let vip = vec!["vip".to_owned()];
    let run = |audiences: &dyn AudienceMembership, traits: &Json, e: &Event| {
        step(
            &j,
            &inst,
            Input::Enter(e),
            &StepContext {
                traits,
                audiences,
                now: t0(),
                max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
            },
        )
    };
    assert_eq!(run(&vip, &traits, &e).instance.current_step, "vip_send");
    assert_eq!(
        run(&NoAudiences, &traits, &e).instance.current_step,
        "big_send"
    );
    let everyone_else = run(&NoAudiences, &json!({}), &e);
    assert_eq!(everyone_else.instance.current_step, "split");
    assert_eq!(everyone_else.instance.state, InstanceState::Completed);
    assert!(everyone_else.effects.iter().any(|e| matches!(
        e,
        Effect::Timeline(TimelineEntry { kind: TimelineKind::Branch, detail, .. })
            if detail["everyone_else"] == json!(true)
    )));
}

fn random_journey(same_branch_on_reentry: bool) -> Journey {
    Journey::new(
        meta(),
        definition(
            session_rule(),
            vec![],
            vec![
                st(
                    "ab",
                    StepKind::RandomSplit(RandomSplitStep {
                        branches: vec![
                            RandomBranch {
                                name: "A".into(),
                                percent: 30,
                                next: nx("a"),
                            },
                            RandomBranch {
                                name: "B".into(),
                                percent: 70,
                                next: nx("b"),
                            },
                        ],
                        same_branch_on_reentry,
                    }),
                ),
                st("a", StepKind::End),
                st("b", StepKind::End),
            ],
        ),
    )
}

#[test]
fn random_split_is_deterministic_and_weighted() {
    let j = random_journey(false);
    let mut a = 0;
    for n in 0..2000 {
        let e = with_id(
            event("checkout_started", json!({"session_id": n})),
            &format!("m{n}"),
        );
        let first = enter(&j, &e);
        assert_eq!(enter(&j, &e), first);
        if first.instance.current_step == "a" {
            a += 1;
        }
    }
    // 30 % of 2000 = 600; 5 standard deviations is about 100.
    assert!((500..700).contains(&a), "{a}");
}

#[test]
fn same_branch_on_reentry_draws_from_the_profile() {
    let j = random_journey(true);
    let branches: std::collections::HashSet<String> = (0..50)
        .map(|n| {
            let e = with_id(
                event("checkout_started", json!({"session_id": n})),
                &format!("m{n}"),
            );
            enter(&j, &e).instance.current_step
        })
        .collect();
    assert_eq!(branches.len(), 1);
}

fn exit_journey(send_before_exit: bool, match_unique: bool) -> Journey {
    let mut def = definition(
        session_rule(),
        vec![],
        vec![
            st(
                "wait",
                StepKind::Delay(DelayStep {
                    duration: Duration::from_secs(60),
                    next: nx("hold"),
                }),
            ),
            hold(
                "hold",
                vec![hold_branch("Bought", "purchase_completed", None)],
                600,
                None,
            ),
        ],
    );
    let mut exit_spec = spec("dest_exit");
    exit_spec.mapping =
        Some(json!({"reason": {"@path": "$.properties.journey_context.unsubscribed.why"}}));
    def.exit_rules = vec![ExitRule {
        event: "unsubscribed".into(),
        filters: vec![],
        match_unique_identifier: match_unique,
        send: send_before_exit.then_some(exit_spec),
    }];
    Journey::new(meta(), def)
}

#[test]
fn exit_rules_end_the_instance_from_a_delay_and_from_a_hold() {
    let j = exit_journey(false, false);
    let in_delay = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    let in_hold = fire(&j, &in_delay, t0() + secs(60)).instance;
    assert_eq!(in_hold.current_step, "hold");
    let unsub = event("unsubscribed", json!({}));
    for inst in [&in_delay, &in_hold] {
        let rule = matching_exit_rule(&j, &unsub, inst).expect("matches");
        let t = step(
            &j,
            inst,
            Input::Exit {
                event: &unsub,
                rule,
            },
            &ctx(t0() + secs(90)),
        );
        assert_eq!(kinds(&t), ["cancel_timer", "exited", "exited"]);
        assert_eq!(t.instance.state, InstanceState::Exited);
        assert!(t.instance.waiting.is_none());
        assert!(t.instance.waiting_events().is_empty());
        assert!(matches!(
            &t.effects[2],
            Effect::Exited {
                reason: ExitReason::ExitRule { index: 0, .. }
            }
        ));
        // Nothing applies to an ended instance.
        assert_eq!(matching_exit_rule(&j, &unsub, &t.instance), None);
        let again = step(
            &j,
            &t.instance,
            Input::Exit {
                event: &unsub,
                rule,
            },
            &ctx(t0()),
        );
        assert!(again.is_noop());
    }
}

#[test]
fn exit_can_require_the_same_unique_value() {
    let j = exit_journey(false, true);
    let inst = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    assert_eq!(
        matching_exit_rule(
            &j,
            &event("unsubscribed", json!({"session_id": "s2"})),
            &inst
        ),
        None
    );
    assert_eq!(
        matching_exit_rule(&j, &event("unsubscribed", json!({})), &inst),
        None
    );
    assert_eq!(
        matching_exit_rule(
            &j,
            &event("unsubscribed", json!({"session_id": "s1"})),
            &inst
        ),
        Some(0)
    );
    // A caller passing a rule that does not match gets no transition.
    let wrong = event("unsubscribed", json!({"session_id": "s2"}));
    assert!(
        step(
            &j,
            &inst,
            Input::Exit {
                event: &wrong,
                rule: 0
            },
            &ctx(t0())
        )
        .is_noop()
    );
}

#[test]
fn send_before_exit_sees_the_exit_event_in_context() {
    let j = exit_journey(true, false);
    let inst = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    let unsub = event("unsubscribed", json!({"why": "too many mails"}));
    let t = step(
        &j,
        &inst,
        Input::Exit {
            event: &unsub,
            rule: 0,
        },
        &ctx(t0()),
    );
    assert_eq!(
        kinds(&t),
        ["cancel_timer", "send", "send", "exited", "exited"]
    );
    let send = t.sends().next().unwrap();
    assert_eq!(send.step_key, "exit_rules[0]");
    assert_eq!(send.destination_id, "dest_exit");
    assert_eq!(send.payload, json!({"reason": "too many mails"}));
}

#[test]
fn terminate_ends_any_active_instance() {
    let j = exit_journey(false, false);
    let inst = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    let t = step(
        &j,
        &inst,
        Input::Terminate(ExitReason::JourneyArchived),
        &ctx(t0()),
    );
    assert_eq!(t.instance.state, InstanceState::Exited);
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Exited {
            reason: ExitReason::JourneyArchived
        })
    ));
}

#[test]
fn a_payload_over_32_kb_fails_the_instance() {
    let j = Journey::new(
        meta(),
        definition(EntryRule::EnterOnce, vec![], vec![send("big", None)]),
    );
    let t = enter(
        &j,
        &event("checkout_started", json!({"blob": "x".repeat(33 * 1024)})),
    );
    assert_eq!(t.instance.state, InstanceState::Failed);
    assert!(t.sends().next().is_none());
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Failed {
            reason: FailReason::PayloadTooLarge { limit: 32768, .. }
        })
    ));
    let fits = enter(
        &j,
        &event("checkout_started", json!({"blob": "x".repeat(30 * 1024)})),
    );
    assert_eq!(fits.instance.state, InstanceState::Completed);
}

#[test]
fn a_mapping_replaces_the_body_and_fills_the_action_path() {
    let mut s = spec("dest_1");
    s.traits = vec!["email".into(), "missing".into()];
    s.action = SendAction {
        method: "PUT".into(),
        path: "/carts/{{cart}}".into(),
    };
    s.mapping = Some(json!({
        "cart": {"@path": "$.properties.journey_context.checkout_started.cart_id"},
        "email": {"@path": "$.properties.email"},
        "gone": {"@path": "$.properties.missing"},
    }));
    let j = Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![st(
                "s",
                StepKind::Send(SendStep {
                    spec: s,
                    next: None,
                }),
            )],
        ),
    );
    let t = enter(&j, &event("checkout_started", json!({"cart_id": "c/1 2"})));
    let send = t.sends().next().unwrap();
    assert_eq!(
        send.payload,
        json!({"cart": "c/1 2", "email": "a@example.com"})
    );
    assert_eq!(send.method, "PUT");
    assert_eq!(send.path, "/carts/c%2F1%202");
}

#[test]
fn broken_graphs_fail_instead_of_looping_or_sticking() {
    let looping = Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![send("a", nx("b")), send("b", nx("a"))],
        ),
    );
    let t = enter(&looping, &event("checkout_started", json!({})));
    assert_eq!(t.instance.state, InstanceState::Failed);
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Failed {
            reason: FailReason::TooManySteps { .. }
        })
    ));
    let dangling = Journey::new(
        meta(),
        definition(EntryRule::EnterOnce, vec![], vec![send("a", nx("nowhere"))]),
    );
    let t = enter(&dangling, &event("checkout_started", json!({})));
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Failed { reason: FailReason::UnknownStep { step_key } }) if step_key == "nowhere"
    ));
}

#[test]
fn instances_round_trip_through_json() {
    let j = two_branch_hold(true);
    let inst = enter(&j, &event("checkout_started", json!({"a": 1}))).instance;
    let e = event("order_completed", json!({"total": 1}));
    let inst = step(&j, &inst, Input::Event(&e), &ctx(t0())).instance;
    let stored = serde_json::to_value(&inst).unwrap();
    assert_eq!(stored["state"], "ACTIVE");
    assert_eq!(stored["waiting"]["type"], "hold");
    assert_eq!(stored["waiting"]["timer"]["kind"], "hold_timeout");
    let back: Instance = serde_json::from_value(stored).unwrap();
    assert_eq!(back, inst);
}

#[test]
fn every_transition_is_stamped_with_now_and_its_cause() {
    let j = journey_with(session_rule(), vec![]);
    let entered = enter(&j, &event("checkout_started", json!({"session_id": "s1"})));
    let t = fire(&j, &entered.instance, t0() + secs(3600));
    assert_eq!(t.instance.updated_at, t0() + secs(3600));
    for effect in &t.effects {
        if let Effect::Timeline(entry) = effect {
            assert_eq!(entry.at, t0() + secs(3600));
            assert_eq!(entry.cause.label(), "timer");
        }
    }
    for effect in &entered.effects {
        if let Effect::Timeline(entry) = effect {
            assert_eq!(entry.cause.label(), "msg-checkout_started");
        }
    }
}

#[test]
fn instance_ids_are_deterministic_uuid_shaped() {
    let id = instance_id("j1", "m1");
    assert_eq!(id, instance_id("j1", "m1"));
    assert_ne!(id, instance_id("j2", "m1"));
    assert_ne!(id, instance_id("j1", "m2"));
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12]);
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}

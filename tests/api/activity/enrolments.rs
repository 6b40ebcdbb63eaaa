//! EnrolContact and UpdateEnrolment: a contact's sequences and their lifecycle.

use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use super::timeline_types;
use crate::conformance;
use crate::support::{Backend, assert_status, create, spawn_app};

async fn enrolments_move_through_their_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "seq@example.com", json!({})).await;
    let enrol = |sequence: &str| pb::EnrolContactRequest {
        contact_id: contact.id.clone(),
        sequence_id: sequence.into(),
        sequence_name: format!("{sequence} name"),
        ..Default::default()
    };
    let e = activity
        .enrol_contact(enrol("onboarding"))
        .await
        .expect("enrol")
        .into_inner();
    assert_eq!(e.status, pb::EnrolmentStatus::Active as i32);
    assert_eq!(e.current_step, 0);
    activity
        .enrol_contact(enrol("upsell"))
        .await
        .expect("enrol second");
    let result = activity.enrol_contact(enrol("onboarding")).await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "already enrolled",
    );

    let update = |sequence: &str, status: pb::EnrolmentStatus, step: Option<i32>| {
        pb::UpdateEnrolmentRequest {
            contact_id: contact.id.clone(),
            sequence_id: sequence.into(),
            status: status as i32,
            current_step: step,
            ..Default::default()
        }
    };
    let stepped = activity
        .update_enrolment(update(
            "onboarding",
            pb::EnrolmentStatus::Unspecified,
            Some(2),
        ))
        .await
        .expect("step")
        .into_inner();
    assert_eq!(stepped.current_step, 2);
    assert_eq!(stepped.status, pb::EnrolmentStatus::Active as i32);
    let done = activity
        .update_enrolment(update("onboarding", pb::EnrolmentStatus::Completed, None))
        .await
        .expect("complete")
        .into_inner();
    assert!(done.completed_at.is_some());
    let result = activity
        .update_enrolment(update("onboarding", pb::EnrolmentStatus::Active, None))
        .await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "finished enrolment",
    );
    let result = activity
        .update_enrolment(update("nope", pb::EnrolmentStatus::Paused, None))
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "unknown enrolment");

    let current = client
        .list_contact_sequences(pb::ListContactSequencesRequest {
            id: contact.id.clone(),
            include_finished: false,
        })
        .await
        .expect("sequences")
        .into_inner();
    let names: Vec<&str> = current
        .enrolments
        .iter()
        .map(|e| e.sequence_id.as_str())
        .collect();
    assert_eq!(names, vec!["upsell"], "finished ones are hidden by default");
    let all = client
        .list_contact_sequences(pb::ListContactSequencesRequest {
            id: contact.id.clone(),
            include_finished: true,
        })
        .await
        .expect("sequences")
        .into_inner();
    assert_eq!(all.enrolments.len(), 2);
    let again = activity
        .enrol_contact(enrol("onboarding"))
        .await
        .expect("re-enrol after completion")
        .into_inner();
    assert_eq!(again.status, pb::EnrolmentStatus::Active as i32);
    assert!(again.completed_at.is_none());
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec![
            "contact.created",
            "sequence.enrolled",
            "sequence.enrolled",
            "sequence.updated",
            "sequence.completed",
            "sequence.enrolled"
        ]
    );
}

conformance!(enrolments_move_through_their_lifecycle,);

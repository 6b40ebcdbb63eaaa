//! SetSegmentMembership: joining and leaving segments.

use kraiter_contacts::api::pb;
use serde_json::json;

use super::timeline_types;
use crate::conformance;
use crate::support::{Backend, create, spawn_app};

async fn segment_memberships_join_and_leave(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "seg@example.com", json!({})).await;
    let set = |segment: &str, member: bool| pb::SetSegmentMembershipRequest {
        contact_id: contact.id.clone(),
        segment_id: segment.into(),
        segment_name: format!("{segment} name"),
        member,
        ..Default::default()
    };
    let joined = activity
        .set_segment_membership(set("vip", true))
        .await
        .expect("join")
        .into_inner();
    assert!(joined.changed);
    assert_eq!(
        joined.membership.as_ref().map(|m| m.segment_id.as_str()),
        Some("vip")
    );
    let repeat = activity
        .set_segment_membership(set("vip", true))
        .await
        .expect("join again")
        .into_inner();
    assert!(!repeat.changed);
    activity
        .set_segment_membership(set("active", true))
        .await
        .expect("join");
    let left = activity
        .set_segment_membership(set("vip", false))
        .await
        .expect("leave")
        .into_inner();
    assert!(left.changed && left.membership.is_none());
    let not_member = activity
        .set_segment_membership(set("vip", false))
        .await
        .expect("leave again")
        .into_inner();
    assert!(!not_member.changed);
    let segments = client
        .list_contact_segments(pb::ListContactSegmentsRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("segments")
        .into_inner();
    let ids: Vec<&str> = segments
        .memberships
        .iter()
        .map(|m| m.segment_id.as_str())
        .collect();
    assert_eq!(ids, vec!["active"]);
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec![
            "contact.created",
            "segment.entered",
            "segment.entered",
            "segment.exited"
        ]
    );
}

conformance!(segment_memberships_join_and_leave,);

//! The OpenAPI document is generated from the code; the snapshot pins it.

use axum::http::StatusCode;

use xgate_server::BillingConfig;

use crate::TestApp;

#[tokio::test]
async fn the_document_is_pinned() {
    // The document of a paid server, the default deployment.
    let app = TestApp::metered(vec![], BillingConfig::default()).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    insta::assert_json_snapshot!("openapi", doc);
}

#[tokio::test]
async fn operations_carry_the_original_ids_and_examples() {
    let app = TestApp::new(vec![]).await;
    let (_, doc) = app.get("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let op = |path: &str, method: &str| doc["paths"][path][method]["operationId"].clone();
    assert_eq!(
        op("/user/medias/continuation", "post"),
        "Continuation_User_s_Media_post__user_medias_continuation"
    );
    assert_eq!(
        op("/user/medias/continuation", "get"),
        "Continuation_User_s_Media_get__user_medias_continuation"
    );
    assert_eq!(op("/user/medias", "post"), "User_s_Media_post__user_medias");
    assert_eq!(op("/user/medias", "get"), "User_s_Media_get__user_medias");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["MediasResponse"]["example"],
        xgate_model::examples::seed_response()
    );
    assert_eq!(
        schemas["MediasContinuationRequest"]["example"],
        xgate_model::examples::seed_request()
    );
    for name in [
        "Tweet",
        "User",
        "VideoVariant",
        "MediaEntity",
        "HttpValidationError",
        "ValidationError",
        "ErrorBody",
    ] {
        assert!(schemas[name].is_object(), "schema {name} is documented");
    }
}

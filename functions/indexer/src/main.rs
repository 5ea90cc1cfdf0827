#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = indexer::Indexer::new(&quiver::lambda::config().await?).await?;
    let scheduled = state.clone();
    quiver::lambda::run_http_or_schedule(indexer::routes(state), move |event| {
        scheduled.clone().on_schedule(event)
    })
    .await
}

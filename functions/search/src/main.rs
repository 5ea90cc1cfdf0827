#[tokio::main]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = search::Search::new(&quiver::Config::from_env()?).await?;
    // Load the index during init (which runs at full CPU); if it fails, the first request retries.
    if let Err(e) = state.warm().await {
        tracing::warn!(error = %e, "no index loaded at init");
    }
    quiver::lambda::run(search::routes(state)).await
}

#[tokio::main]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = events::Events::new(&quiver::Config::from_env()?)?;
    quiver::lambda::run(events::routes(state)).await
}

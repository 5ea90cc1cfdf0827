#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = process::Process::new(&quiver::lambda::config().await?)?;
    quiver::lambda::run(process::routes(state)).await
}

//! Attributes that declare a scenario of the integration tests (`tests/api`)
//! where it is written, as one test per database backend.
//!
//! - `#[every_backend]` on `async fn name(app: TestApp)`: the scenario runs
//!   against the server in-process, on a database of its own.
//! - `#[every_database]` on `async fn name(database_url: &str)`: the scenario
//!   starts the real binary itself, on the database at that URL.
//!
//! The function stays as written, so rustfmt and editors treat it as any
//! other. Beside it the attribute writes `backend_tests!(app name)` (or
//! `database name`), the test crate's macro in `tests/api/support/mod.rs`,
//! which makes a module `name` with one test per backend: `name::sqlite` and
//! `name::postgres`. Which backends there are, and how a test gets its
//! server or database, is written there once; this crate only checks the
//! signature and hands the name on.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, Type};

/// Declares `async fn name(app: TestApp)` as a test on every backend: each
/// test starts the server in-process on a fresh database of that backend
/// and passes it in.
#[proc_macro_attribute]
pub fn every_backend(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Scenario::App, args.into(), item.into()).into()
}

/// Declares `async fn name(database_url: &str)` as a test on every backend:
/// each test makes a fresh database of that backend and passes its URL, for
/// scenarios that run the real binary.
#[proc_macro_attribute]
pub fn every_database(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Scenario::DatabaseUrl, args.into(), item.into()).into()
}

/// What a scenario is given.
#[derive(Clone, Copy)]
enum Scenario {
    /// A `TestApp`: the server in-process.
    App,
    /// A database URL, for the real binary.
    DatabaseUrl,
}

impl Scenario {
    fn attribute(self) -> &'static str {
        match self {
            Scenario::App => "every_backend",
            Scenario::DatabaseUrl => "every_database",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Scenario::App => "async fn name(app: TestApp)",
            Scenario::DatabaseUrl => "async fn name(database_url: &str)",
        }
    }

    /// The first token of `backend_tests!`, which picks how each test
    /// starts.
    fn kind(self) -> Tokens {
        match self {
            Scenario::App => quote!(app),
            Scenario::DatabaseUrl => quote!(database),
        }
    }

    fn takes(self, ty: &Type) -> bool {
        match (self, ty) {
            (Scenario::App, Type::Path(path)) => path
                .path
                .segments
                .last()
                .is_some_and(|segment| segment.ident == "TestApp"),
            (Scenario::DatabaseUrl, Type::Reference(reference)) => {
                reference.mutability.is_none()
                    && matches!(&*reference.elem, Type::Path(path) if path.path.is_ident("str"))
            }
            _ => false,
        }
    }
}

/// The function as written and its tests; on a wrong signature, the
/// function and an error that says the right one.
fn expand(scenario: Scenario, args: Tokens, item: Tokens) -> Tokens {
    match tests_of(scenario, args, item.clone()) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #item)
        }
    }
}

fn tests_of(scenario: Scenario, args: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let wrong = |spanned: &dyn quote::ToTokens, what: &str| {
        syn::Error::new_spanned(
            spanned,
            format!(
                "#[{}] {what}: it declares `{}`",
                scenario.attribute(),
                scenario.signature()
            ),
        )
    };
    if !args.is_empty() {
        return Err(wrong(&args, "takes no arguments"));
    }
    let function: ItemFn = syn::parse2(item)?;
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        return Err(wrong(&signature.fn_token, "needs an async fn"));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(wrong(&signature.generics, "takes no generics"));
    }
    if let ReturnType::Type(..) = signature.output {
        return Err(wrong(&signature.output, "returns nothing"));
    }
    let mut inputs = signature.inputs.iter();
    match (inputs.next(), inputs.next()) {
        (Some(FnArg::Typed(argument)), None) if scenario.takes(&argument.ty) => {}
        (Some(FnArg::Typed(argument)), None) => {
            return Err(wrong(&argument.ty, "takes another argument"));
        }
        _ => return Err(wrong(&signature.inputs, "takes exactly one argument")),
    }
    let name = &signature.ident;
    let kind = scenario.kind();
    Ok(quote! {
        #function
        crate::support::backend_tests!(#kind #name);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(scenario: Scenario, item: Tokens) -> String {
        expand(scenario, Tokens::new(), item).to_string()
    }

    #[test]
    fn a_scenario_is_kept_and_followed_by_its_tests() {
        let text = expanded(
            Scenario::App,
            quote!(
                async fn lists_nothing(app: TestApp) {
                    app.get().await;
                }
            ),
        );
        assert!(
            text.starts_with("async fn lists_nothing (app : TestApp)"),
            "{text}"
        );
        assert!(
            text.ends_with("crate :: support :: backend_tests ! (app lists_nothing) ;"),
            "{text}"
        );
        let text = expanded(
            Scenario::DatabaseUrl,
            quote!(
                async fn restarts(database_url: &str) {}
            ),
        );
        assert!(
            text.ends_with("crate :: support :: backend_tests ! (database restarts) ;"),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_signature_is_a_compile_error_that_names_the_right_one() {
        let cases = [
            (
                Scenario::App,
                quote!(
                    fn not_async(app: TestApp) {}
                ),
            ),
            (
                Scenario::App,
                quote!(
                    async fn no_app() {}
                ),
            ),
            (
                Scenario::App,
                quote!(
                    async fn two(app: TestApp, other: TestApp) {}
                ),
            ),
            (
                Scenario::App,
                quote!(
                    async fn url(database_url: &str) {}
                ),
            ),
            (
                Scenario::App,
                quote!(
                    async fn generic<T>(app: TestApp) {}
                ),
            ),
            (
                Scenario::App,
                quote!(
                    async fn answers(app: TestApp) -> u8 {
                        1
                    }
                ),
            ),
            (
                Scenario::DatabaseUrl,
                quote!(
                    async fn app(app: TestApp) {}
                ),
            ),
            (
                Scenario::DatabaseUrl,
                quote!(
                    async fn owned(url: String) {}
                ),
            ),
        ];
        for (scenario, item) in cases {
            let text = expanded(scenario, item.clone());
            assert!(text.starts_with(":: core :: compile_error !"), "{text}");
            assert!(text.contains(scenario.signature()), "{text}");
            assert!(!text.contains("backend_tests"), "{item}: {text}");
        }
        let text = expand(
            Scenario::App,
            quote!(fast),
            quote!(
                async fn a(app: TestApp) {}
            ),
        );
        assert!(text.to_string().contains("takes no arguments"), "{text}");
    }
}

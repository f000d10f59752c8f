//! The `#[client]` attribute macro of courier. Use it through the `courier`
//! facade (`#[courier::client(…)]`); its documentation lives there.
//!
//! The macro works in three steps, as thiserror-impl and serde_derive do:
//! `model` parses the trait into a plain model and validates all of it,
//! collecting every mistake with the span of the offending token; `expand`
//! generates code from a valid model. When there are mistakes, the trait is
//! still emitted (with courier's attributes removed) next to the errors, so
//! the user sees only the errors that matter.

// Library code never unwraps: input and the network must not panic it.
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

mod expand;
mod model;
mod policy;

use proc_macro::TokenStream;

/// Turns an annotated trait into a typed HTTP client. See the `courier`
/// crate's documentation for the attributes it accepts.
#[proc_macro_attribute]
pub fn client(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let input = proc_macro2::TokenStream::from(input);
    let item = match syn::parse2::<syn::ItemTrait>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let err = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[client] applies to a trait: `#[client(name = \"…\")] pub trait Users { … }`",
            );
            let mut out = err.into_compile_error();
            out.extend(input);
            return out.into();
        }
    };
    match model::ClientModel::parse(args, item) {
        Ok(model) => expand::client(&model).into(),
        Err(failed) => {
            let (errors, cleaned) = *failed;
            let mut out = errors.into_compile_error();
            out.extend(expand::trait_only(&cleaned));
            out.into()
        }
    }
}

//! Generate: the trait (through `async_trait`), the `<Trait>Client` type, its
//! static description and its implementation of the trait.
//!
//! Generated code names the runtime only through `::courier::__private`, never
//! through the user's imports.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemTrait, TypeParamBound};

use crate::model::{ClientModel, MethodModel, ParamKind, Piece, Shape};

/// The trait alone, as the user wrote it minus courier's attributes, made
/// `dyn`-compatible by `async_trait` and `Send + Sync` so that
/// `Arc<dyn Trait>` can cross tasks.
pub(crate) fn trait_only(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
    for marker in ["Send", "Sync"] {
        let present = item.supertraits.iter().any(|b| match b {
            TypeParamBound::Trait(t) => t.path.segments.last().is_some_and(|s| s.ident == marker),
            _ => false,
        });
        if !present {
            let ident = format_ident!("{}", marker);
            item.supertraits
                .push(syn::parse_quote!(::core::marker::#ident));
        }
    }
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    quote! {
        #[::courier::__private::async_trait]
        #item
    }
}

/// Everything for a valid client trait.
pub(crate) fn client(model: &ClientModel) -> TokenStream {
    let item = &model.item;
    let trait_tokens = trait_only(item);
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let client_ident = format_ident!("{}Client", trait_ident);
    let name = &model.name;
    let url = match &model.url {
        Some(url) => quote!(::core::option::Option::Some(#url)),
        None => quote!(::core::option::Option::None),
    };
    let defs = model.methods.iter().map(method_def);
    let trait_policy = model.policy.to_tokens();
    let inherent = model
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| inherent_method(vis, trait_ident, index, method));
    let impls = model
        .methods
        .iter()
        .map(|method| trait_method(&client_ident, method));
    let struct_doc = format!(
        "A courier HTTP client for the `{name}` service, implementing [`{trait_ident}`].\n\n\
         Build one with [`{client_ident}::builder()`]. Clones share the connection pool \
         and all runtime state."
    );
    let builder_doc = format!(
        "Starts building a `{client_ident}`: set at least a base URL (unless the trait has \
         `url = …`), then call `build()`."
    );

    quote! {
        #trait_tokens

        #[doc = #struct_doc]
        #[derive(Clone)]
        #vis struct #client_ident {
            __courier_rt: ::courier::__private::Runtime<#client_ident>,
        }

        impl #client_ident {
            #[doc = #builder_doc]
            #vis fn builder() -> ::courier::__private::ClientBuilder<Self> {
                ::courier::__private::ClientBuilder::new()
            }

            #(#inherent)*
        }

        impl ::core::fmt::Debug for #client_ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.__courier_rt, f)
            }
        }

        impl ::courier::__private::ClientSpec for #client_ident {
            type Api = dyn #trait_ident;
            const DEF: &'static ::courier::__private::spec::ClientDef = &::courier::__private::spec::ClientDef {
                name: #name,
                url: #url,
                methods: &[#(#defs),*],
                policy: #trait_policy,
            };
            fn from_runtime(runtime: ::courier::__private::Runtime<Self>) -> Self {
                #client_ident { __courier_rt: runtime }
            }
            fn runtime(&self) -> &::courier::__private::Runtime<Self> {
                &self.__courier_rt
            }
        }

        impl<__CourierF: #trait_ident + 'static> ::courier::__private::IntoFallback<__CourierF>
            for #client_ident
        {
            fn into_api(fallback: __CourierF) -> ::courier::__private::Arc<dyn #trait_ident> {
                ::courier::__private::Arc::new(fallback)
            }
        }

        #[::courier::__private::async_trait]
        impl #trait_ident for #client_ident {
            #(#impls)*
        }
    }
}

fn method_def(method: &MethodModel) -> TokenStream {
    let name = method.sig.ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let verb = quote::format_ident!("{}", method.verb.variant());
    let path = &method.full_path;
    let idempotent = method.idempotent;
    let auth = method.auth;
    let replayable = method.replayable;
    let policy = method.policy.to_tokens();
    quote! {
        ::courier::__private::spec::MethodDef {
            name: #name,
            verb: ::courier::__private::spec::Verb::#verb,
            path: #path,
            idempotent: #idempotent,
            auth: #auth,
            replayable: #replayable,
            policy: #policy,
        }
    }
}

/// The method itself, as an inherent `async fn` of the client: a call on
/// the concrete client type resolves here first, so its future is not boxed
/// (one allocation fewer per call than through the trait).
fn inherent_method(
    vis: &syn::Visibility,
    trait_ident: &syn::Ident,
    index: usize,
    method: &MethodModel,
) -> TokenStream {
    let sig = &method.sig;
    let attrs = &method.kept_attrs;
    let decoder = &method.decoder;
    let fill = fill_request(method);
    let ident = &method.sig.ident;
    let args = method.params.iter().map(|p| &p.ident);
    // A streamed body was moved into the request: the fallback cannot have
    // it, so such a method has none. (The trait's method is still named, so
    // a private trait whose client is only called directly gets no
    // dead-code warning for it.)
    let fallback = if !method.replayable {
        quote! { let _ = <Self as #trait_ident>::#ident; }
    } else {
        quote! {
            if let ::core::option::Option::Some(__courier_fallback) =
                self.__courier_rt.fallback_for(#index, &__courier_err)
            {
                // In the call's span, marked as answered by the fallback.
                return ::courier::__private::Instrument::instrument(
                    __courier_fallback.#ident(#(#args),*),
                    __courier_call.fallback_span(),
                )
                .await;
            }
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            let __courier_call = self.__courier_rt.method(#index);
            let __courier_result = __courier_call
                .call::<#decoder, _>(|__courier_req: &mut ::courier::__private::RequestParts| {
                    #(#fill)*
                    ::core::result::Result::Ok(())
                })
                .await;
            match __courier_result {
                ::core::result::Result::Ok(__courier_value) => {
                    ::core::result::Result::Ok(__courier_value)
                }
                ::core::result::Result::Err(__courier_err) => {
                    #fallback
                    ::core::result::Result::Err(::core::convert::From::from(__courier_err))
                }
            }
        }
    }
}

/// The trait's method (boxed by `async_trait`, for `dyn Trait`), delegating
/// to the inherent one.
fn trait_method(client: &syn::Ident, method: &MethodModel) -> TokenStream {
    let sig = &method.sig;
    let cfg_attrs = &method.cfg_attrs;
    let ident = &method.sig.ident;
    let args = method.params.iter().map(|p| &p.ident);
    quote! {
        #(#cfg_attrs)*
        #sig {
            #client::#ident(self, #(#args),*).await
        }
    }
}

/// The statements that turn the arguments into request parts: the path
/// pieces in order, then query pairs, headers and the body.
fn fill_request(method: &MethodModel) -> Vec<TokenStream> {
    let mut out = Vec::new();
    let multipart = method
        .params
        .iter()
        .any(|p| matches!(p.kind, ParamKind::Multipart { .. }));
    if multipart {
        out.push(quote! {
            let mut __courier_parts = ::courier::__private::MultipartBody::new();
        });
    }
    for piece in &method.pieces {
        match piece {
            Piece::Literal(text) => out.push(quote!(__courier_req.push_literal(#text);)),
            Piece::SegmentStart => {
                out.push(quote!(let __courier_segment = __courier_req.segment_start();));
            }
            Piece::SegmentEnd { params } => out.push(quote! {
                __courier_req.check_segment(__courier_segment, #params)?;
            }),
            Piece::Param {
                name,
                whole_segment,
            } => {
                let Some(param) = method
                    .params
                    .iter()
                    .find(|p| matches!(&p.kind, ParamKind::Path(n) if n == name))
                else {
                    continue; // unreachable: the model checked every placeholder
                };
                let ident = &param.ident;
                out.push(quote_spanned! {param.ty.span()=>
                    __courier_req.push_path_param(#name, &#ident, #whole_segment)?;
                });
            }
        }
    }
    for param in &method.params {
        let ident = &param.ident;
        let span = param.ty.span();
        match &param.kind {
            ParamKind::Path(_) => {}
            ParamKind::Query {
                name,
                shape: Shape::Repeated,
                csv: true,
            } => out.push(quote_spanned! {span=>
                __courier_req.push_query_csv(#name, #ident.iter());
            }),
            ParamKind::Query {
                name,
                shape: Shape::OptionalRepeated,
                csv: true,
            } => out.push(quote_spanned! {span=>
                if let ::core::option::Option::Some(__courier_vs) = &#ident {
                    __courier_req.push_query_csv(#name, __courier_vs.iter());
                }
            }),
            ParamKind::QueryMap {
                name,
                optional,
                brackets,
                csv,
            } => {
                let nesting = if *brackets {
                    quote!(::courier::__private::QueryNesting::Brackets)
                } else {
                    quote!(::courier::__private::QueryNesting::Dots)
                };
                let format = if *csv {
                    quote!(::courier::__private::QueryFormat::Csv)
                } else {
                    quote!(::courier::__private::QueryFormat::Multi)
                };
                out.push(if *optional {
                    quote_spanned! {span=>
                        if let ::core::option::Option::Some(__courier_v) = &#ident {
                            __courier_req.push_query_map(#name, __courier_v, #nesting, #format)?;
                        }
                    }
                } else {
                    quote_spanned! {span=>
                        __courier_req.push_query_map(#name, &#ident, #nesting, #format)?;
                    }
                });
            }
            ParamKind::Query { name, shape, .. } => out.push(match shape {
                Shape::One => quote_spanned! {span=>
                    __courier_req.push_query(#name, &#ident);
                },
                Shape::Optional => quote_spanned! {span=>
                    if let ::core::option::Option::Some(__courier_v) = &#ident {
                        __courier_req.push_query(#name, __courier_v);
                    }
                },
                Shape::Repeated => quote_spanned! {span=>
                    for __courier_v in #ident.iter() {
                        __courier_req.push_query(#name, __courier_v);
                    }
                },
                Shape::OptionalRepeated => quote_spanned! {span=>
                    if let ::core::option::Option::Some(__courier_vs) = &#ident {
                        for __courier_v in __courier_vs.iter() {
                            __courier_req.push_query(#name, __courier_v);
                        }
                    }
                },
            }),
            ParamKind::Header { name, optional } => {
                let header = quote!(::courier::__private::HeaderName::from_static(#name));
                out.push(if *optional {
                    quote_spanned! {span=>
                        if let ::core::option::Option::Some(__courier_v) = &#ident {
                            __courier_req.push_header(#header, __courier_v)?;
                        }
                    }
                } else {
                    quote_spanned! {span=>
                        __courier_req.push_header(#header, &#ident)?;
                    }
                });
            }
            ParamKind::Body => {
                let codec = &method.codec;
                out.push(quote_spanned! {span=>
                    __courier_req.set_body_with::<#codec, _>(&#ident)?;
                });
            }
            ParamKind::StreamBody => out.push(quote_spanned! {span=>
                __courier_req.set_stream_body(#ident);
            }),
            ParamKind::Form => out.push(quote_spanned! {span=>
                __courier_req.set_body_with::<::courier::__private::Form, _>(&#ident)?;
            }),
            ParamKind::Multipart {
                name,
                shape,
                streamed: true,
            } => out.push(match shape {
                Shape::One => quote_spanned! {span=>
                    __courier_parts.append_stream(#name, #ident)?;
                },
                Shape::Optional => quote_spanned! {span=>
                    if let ::core::option::Option::Some(__courier_v) = #ident {
                        __courier_parts.append_stream(#name, __courier_v)?;
                    }
                },
                Shape::Repeated => quote_spanned! {span=>
                    for __courier_v in #ident {
                        __courier_parts.append_stream(#name, __courier_v)?;
                    }
                },
                Shape::OptionalRepeated => quote_spanned! {span=>
                    if let ::core::option::Option::Some(__courier_vs) = #ident {
                        for __courier_v in __courier_vs {
                            __courier_parts.append_stream(#name, __courier_v)?;
                        }
                    }
                },
            }),
            ParamKind::Multipart { name, shape, .. } => out.push(match shape {
                Shape::One => quote_spanned! {span=>
                    __courier_parts.append(#name, &#ident)?;
                },
                Shape::Optional => quote_spanned! {span=>
                    if let ::core::option::Option::Some(__courier_v) = &#ident {
                        __courier_parts.append(#name, __courier_v)?;
                    }
                },
                Shape::Repeated => quote_spanned! {span=>
                    for __courier_v in #ident.iter() {
                        __courier_parts.append(#name, __courier_v)?;
                    }
                },
                Shape::OptionalRepeated => quote_spanned! {span=>
                    if let ::core::option::Option::Some(__courier_vs) = &#ident {
                        for __courier_v in __courier_vs.iter() {
                            __courier_parts.append(#name, __courier_v)?;
                        }
                    }
                },
            }),
        }
    }
    if multipart {
        out.push(quote! {
            __courier_req.set_multipart(__courier_parts)?;
        });
    }
    out
}

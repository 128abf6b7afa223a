"""A small GraphQL executor for fake servers: real parsing (graphql-core), answers from Python objects.

There is no schema: a fake answers with `Obj`s whose fields are values or callables taking the
field's arguments. What a fake does not serve fails loudly, naming the type and the field, so a
query shape the fake has not been taught is a 400 that says what is missing, never a silent null:

    user = Obj("User", id="VXNlcjox", username=lambda: "ada", teams=lambda first=None: ...)
    execute(document, variables, query_root, mutation_root)

Fragments (named and inline) apply when their type condition is the object's `__typename` or one
of the interfaces it `implements`; `@include` / `@skip` are honoured; aliases name the answer keys;
variables take their defaults from the operation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from graphql import (
    BooleanValueNode,
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    parse,
)

__all__ = ["GraphQLFault", "Obj", "UnknownField", "execute", "operation_of", "parse_document"]


class UnknownField(Exception):
    """The query asks for something the fake does not serve (answered 400, naming it)."""


class GraphQLFault(Exception):
    """A resolver's error the way W&B reports one: in `errors`, with `data` for the field null."""

    def __init__(self, message: str, *, status: int = 200, extensions: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.extensions = dict(extensions or {})


class Obj:
    """One GraphQL object: a type name, the interfaces it implements, and its fields."""

    __slots__ = ("typename", "implements", "fields")

    def __init__(self, typename: str, *, implements: tuple[str, ...] = (), **fields: Any) -> None:
        self.typename = typename
        self.implements = implements
        self.fields = fields

    def is_a(self, type_condition: str) -> bool:
        return type_condition == self.typename or type_condition in self.implements

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        if name == "__typename":
            return self.typename
        if name not in self.fields:
            raise UnknownField(f"{self.typename}.{name} is not served by this fake (args {sorted(args)})")
        value = self.fields[name]
        return value(**args) if callable(value) else value

    def __repr__(self) -> str:
        return f"Obj({self.typename}, {sorted(self.fields)})"


def parse_document(text: str) -> DocumentNode:
    try:
        return parse(text)
    except GraphQLError as exc:
        raise UnknownField(f"the document does not parse: {exc.message}") from None


def operation_of(document: DocumentNode) -> OperationDefinitionNode:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(ops) != 1:
        raise UnknownField(f"expected one operation in the document, found {len(ops)}")
    return ops[0]


def execute(document: DocumentNode, variables: Mapping[str, Any] | None, roots: Mapping[str, Obj]) -> dict[str, Any]:
    """`{"data": ...}` or `{"data": ..., "errors": [...]}`; `UnknownField` for what is not served.

    `roots` maps "query" / "mutation" to the root objects.
    """
    op = operation_of(document)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    values = dict(variables or {})
    for definition in op.variable_definitions or ():
        name = definition.variable.name.value
        if name not in values and definition.default_value is not None:
            values[name] = _value(definition.default_value, {})
    kind = op.operation.value
    if kind not in roots:
        raise UnknownField(f"{kind} operations are not served by this fake")
    run = _Run(fragments, values)
    data = run.complete(roots[kind], op.selection_set, path=kind)
    answer: dict[str, Any] = {"data": data}
    if run.errors:
        answer["errors"] = run.errors
    return answer


class _Run:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode], variables: dict[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables
        self.errors: list[dict[str, Any]] = []

    def complete(self, value: Any, selection: SelectionSetNode | None, path: str) -> Any:
        if isinstance(value, Callable) and not isinstance(value, Obj):  # a lazy value
            value = value()
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [self.complete(v, selection, f"{path}[{i}]") for i, v in enumerate(value)]
        if selection is None:
            if isinstance(value, Obj):
                raise UnknownField(f"{path} is an object ({value.typename}) but the query selects no fields of it")
            return value
        if not isinstance(value, Obj):
            raise UnknownField(f"{path} is a scalar in this fake ({type(value).__name__}) but the query selects fields of it")
        out: dict[str, Any] = {}
        for field in self.fields(value, selection):
            key = field.alias.value if field.alias else field.name.value
            args = {a.name.value: _value(a.value, self.variables) for a in field.arguments or ()}
            try:
                resolved = value.resolve(field.name.value, args)
            except GraphQLFault as fault:
                if fault.status != 200:
                    raise  # W&B answers some errors with an HTTP status (409 for a name taken, ...)
                self.errors.append({"message": str(fault), "path": [*path.split("."), key],
                                    **({"extensions": fault.extensions} if fault.extensions else {})})
                out[key] = None
                continue
            out[key] = self.complete(resolved, field.selection_set, f"{path}.{key}")
        return out

    def fields(self, obj: Obj, selection: SelectionSetNode) -> list[FieldNode]:
        collected: list[FieldNode] = []
        for node in selection.selections:
            if not self.included(node):
                continue
            if isinstance(node, FieldNode):
                collected.append(node)
            elif isinstance(node, InlineFragmentNode):
                if node.type_condition is None or obj.is_a(node.type_condition.name.value):
                    collected.extend(self.fields(obj, node.selection_set))
            elif isinstance(node, FragmentSpreadNode):
                fragment = self.fragments.get(node.name.value)
                if fragment is None:
                    raise UnknownField(f"fragment {node.name.value} is used but not defined")
                if obj.is_a(fragment.type_condition.name.value):
                    collected.extend(self.fields(obj, fragment.selection_set))
        return collected

    def included(self, node: Any) -> bool:
        for directive in node.directives or ():
            args = {a.name.value: _value(a.value, self.variables) for a in directive.arguments or ()}
            if directive.name.value == "include" and not args.get("if"):
                return False
            if directive.name.value == "skip" and args.get("if"):
                return False
        return True


def _value(node: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(node, VariableNode):
        return variables.get(node.name.value)
    if isinstance(node, IntValueNode):
        return int(node.value)
    if isinstance(node, FloatValueNode):
        return float(node.value)
    if isinstance(node, (StringValueNode, EnumValueNode)):
        return node.value
    if isinstance(node, BooleanValueNode):
        return node.value
    if isinstance(node, NullValueNode):
        return None
    if isinstance(node, ListValueNode):
        return [_value(v, variables) for v in node.values]
    if isinstance(node, ObjectValueNode):
        return {f.name.value: _value(f.value, variables) for f in node.fields}
    raise UnknownField(f"unsupported GraphQL value {type(node).__name__}")

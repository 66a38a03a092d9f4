//! The SQL guard: parses one statement and says what it does and which tables it touches.
//!
//! Decisions come from the parsed statement, never from its text: a string literal holding
//! `DROP TABLE` is data. Anything the guard cannot understand is refused (fail closed).

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FromTable, ObjectName, ObjectNamePart, ObjectType, Query, Select, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, Value, ValueWithSpan, Visit, Visitor,
    visit_relations,
};
use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::SqlDialect;
use crate::sql_functions::is_allowed_function;

/// The most bytes of SQL the guard parses.
pub(crate) const MAX_SQL_BYTES: usize = 64 * 1024;

/// The most tokens of SQL the guard parses: a long flat chain (`1+1+…`) builds a syntax tree as
/// deep as it is long, and comparing or dropping a deep tree recurses.
pub(crate) const MAX_SQL_TOKENS: usize = 4096;

/// An identifier as the database compares it: PostgreSQL folds unquoted names to lower case and
/// keeps quoted ones as written; SQLite and MySQL compare names without regard to ASCII case.
fn normalized(ident: &sqlparser::ast::Ident, dialect: SqlDialect) -> String {
    match (dialect, ident.quote_style) {
        (SqlDialect::Postgres, Some(_)) => ident.value.clone(),
        _ => ident.value.to_ascii_lowercase(),
    }
}

/// What kind of statement a query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementClass {
    /// `SELECT`, `WITH … SELECT`, `VALUES`: reads only.
    Read,
    /// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `SELECT … INTO`.
    Write,
    /// `CREATE`/`ALTER`/`DROP`/`TRUNCATE` of tables, views and indexes.
    Schema,
    /// Anything else (`GRANT`, `ATTACH`, `PRAGMA`, `SET`, `COPY`, `CALL`, `LOAD`, …): its objects
    /// cannot be listed, so it needs unrestricted write access to the database.
    Other,
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Schema => "schema change",
            Self::Other => "administrative",
        })
    }
}

/// A table reference: its name parts (schema, table), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TableRef {
    pub(crate) parts: Vec<String>,
}

impl TableRef {
    fn from_object_name(name: &ObjectName) -> Result<Self, String> {
        let parts = name
            .0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => Ok(ident.value.to_lowercase()),
                ObjectNamePart::Function(_) => {
                    Err(format!("computed table name `{name}` is not allowed"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parts.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            return Err(format!("table name `{name}` is not allowed"));
        }
        Ok(Self { parts })
    }

    /// A reference from name parts as the database engine reports them (lower-cased here);
    /// `None` for an empty or malformed name.
    pub(crate) fn from_parts(parts: &[&str]) -> Option<Self> {
        let parts: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        if parts.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            return None;
        }
        Some(Self { parts })
    }

    /// The table's own name (last part).
    pub(crate) fn table(&self) -> &str {
        self.parts.last().map(String::as_str).unwrap_or_default()
    }

    /// Whether the name is qualified by a schema or database.
    pub(crate) fn is_qualified(&self) -> bool {
        self.parts.len() > 1
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join("."))
    }
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SqlAnalysis {
    pub(crate) class: StatementClass,
    /// Tables whose rows the statement reads.
    pub(crate) reads: Vec<TableRef>,
    /// Tables the statement changes.
    pub(crate) writes: Vec<TableRef>,
    /// The statement printed back from its checked syntax tree: what runs, instead of the
    /// plugin's original text.
    pub(crate) checked_sql: String,
    /// The number of `?` placeholders.
    pub(crate) placeholders: usize,
}

/// The parser of a dialect.
fn parser_dialect(dialect: SqlDialect) -> Box<dyn Dialect> {
    match dialect {
        SqlDialect::Generic => Box::new(GenericDialect),
        SqlDialect::Sqlite => Box::new(SQLiteDialect {}),
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
        SqlDialect::MySql => Box::new(MySqlDialect {}),
    }
}

/// Parses `sql` as exactly one statement, in the dialect of the database it goes to, and
/// analyses it. The statement is then printed back from the syntax tree, and the printed text
/// must parse to the same tree: what was checked is what runs, and a construct the printer
/// cannot reproduce is refused.
pub(crate) fn analyse(sql: &str, dialect: SqlDialect) -> Result<SqlAnalysis, String> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(format!(
            "the statement has {} bytes; the most is {MAX_SQL_BYTES}",
            sql.len()
        ));
    }
    let parser = parser_dialect(dialect);
    let statement = parse_one(parser.as_ref(), sql, dialect == SqlDialect::Postgres)?;
    let mut analysis = analyse_statement(&statement, dialect)?;
    let printed = statement.to_string();
    match parse_one(parser.as_ref(), &printed, false) {
        Ok(reparsed) if reparsed == statement => {}
        _ => {
            return Err(
                "the statement cannot be printed back exactly as it was parsed: write it more plainly"
                    .to_owned(),
            );
        }
    }
    analysis.checked_sql = printed;
    Ok(analysis)
}

/// Parses exactly one statement. With `number_placeholders` (PostgreSQL, whose own
/// placeholders are `$1, $2, …`), each `?` token becomes the next `$n`, and placeholders
/// written as `$n` by the plugin are refused: the numbering is the guard's, from the tokens
/// PostgreSQL's lexer would see, never from a second reading of the text.
fn parse_one(
    dialect: &dyn Dialect,
    sql: &str,
    number_placeholders: bool,
) -> Result<Statement, String> {
    let does_not_parse = |e: &dyn fmt::Display| format!("SQL does not parse: {e}");
    let mut tokens = Tokenizer::new(dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| does_not_parse(&e))?;
    if tokens.len() > MAX_SQL_TOKENS {
        return Err(format!(
            "the statement has {} tokens; the most is {MAX_SQL_TOKENS}",
            tokens.len()
        ));
    }
    if number_placeholders {
        let mut count = 0;
        for token in &mut tokens {
            match &token.token {
                Token::Question => {
                    count += 1;
                    token.token = Token::Placeholder(format!("${count}"));
                }
                Token::Placeholder(written) => {
                    return Err(format!(
                        "placeholder `{written}` is not supported: write `?` for each argument"
                    ));
                }
                _ => {}
            }
        }
    }
    let mut statements = Parser::new(dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| does_not_parse(&e))?;
    match statements.len() {
        0 => Err("the query is empty".to_owned()),
        1 => Ok(statements.remove(0)),
        n => Err(format!(
            "{n} statements in one call: send one statement per call"
        )),
    }
}

fn analyse_statement(statement: &Statement, dialect: SqlDialect) -> Result<SqlAnalysis, String> {
    let mut collector = Collector {
        dialect,
        ..Collector::default()
    };
    if let ControlFlow::Break(problem) = statement.visit(&mut collector) {
        return Err(problem);
    }
    let reads = collector.relations;
    let mut writes = collector.writes;
    writes.append(&mut collector.select_into);
    let placeholders = collector.placeholders;
    // A statement that changes rows anywhere (a data-modifying CTE, `SELECT … INTO`, DML
    // behind `WITH`) is a write, whatever wraps it.
    let class = match statement {
        Statement::Query(_)
        | Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
            if !writes.is_empty() =>
        {
            StatementClass::Write
        }
        Statement::Query(_) => StatementClass::Read,
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => {
            return Err("a data-changing statement without a target table".to_owned());
        }
        Statement::Drop {
            object_type,
            names,
            table,
            ..
        } => {
            if !matches!(
                object_type,
                ObjectType::Table
                    | ObjectType::View
                    | ObjectType::Index
                    | ObjectType::MaterializedView
            ) {
                return Ok(SqlAnalysis::other(placeholders));
            }
            for name in names.iter().chain(table.iter()) {
                writes.push(TableRef::from_object_name(name)?);
            }
            return Ok(SqlAnalysis::schema(writes, reads, placeholders));
        }
        Statement::CreateTable(create) if create.temporary => {
            return Ok(SqlAnalysis::other(placeholders));
        }
        Statement::CreateView(view) if view.temporary => {
            return Ok(SqlAnalysis::other(placeholders));
        }
        Statement::AlterTable(alter) => {
            // A new name is a table written too (`RENAME TO`, `SET SCHEMA`).
            for operation in &alter.operations {
                if let sqlparser::ast::AlterTableOperation::RenameTable { table_name } = operation {
                    let (sqlparser::ast::RenameTableNameKind::As(name)
                    | sqlparser::ast::RenameTableNameKind::To(name)) = table_name;
                    writes.push(TableRef::from_object_name(name)?);
                }
            }
            return Ok(SqlAnalysis::schema(writes, reads, placeholders));
        }
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::Truncate(_) => {
            return Ok(SqlAnalysis::schema(writes, reads, placeholders));
        }
        _ => return Ok(SqlAnalysis::other(placeholders)),
    };
    Ok(SqlAnalysis {
        class,
        reads,
        writes,
        checked_sql: String::new(),
        placeholders,
    })
}

impl SqlAnalysis {
    /// A schema change: every table it names needs write access, its sources included.
    fn schema(mut writes: Vec<TableRef>, reads: Vec<TableRef>, placeholders: usize) -> Self {
        writes.extend(reads);
        Self {
            class: StatementClass::Schema,
            reads: Vec::new(),
            writes,
            checked_sql: String::new(),
            placeholders,
        }
    }

    /// A statement whose objects cannot be listed.
    fn other(placeholders: usize) -> Self {
        Self {
            class: StatementClass::Other,
            reads: Vec::new(),
            writes: Vec::new(),
            checked_sql: String::new(),
            placeholders,
        }
    }
}

/// The tables a data-changing statement writes, and whether it reads them back (`RETURNING`).
/// Taken from the statement itself, never through CTE names: a CTE cannot hide the real table
/// a statement writes.
fn write_targets(statement: &Statement) -> Result<Option<(Vec<TableRef>, bool)>, String> {
    Ok(Some(match statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Err("INSERT into a table function is not allowed".to_owned());
            };
            (
                vec![TableRef::from_object_name(name)?],
                insert.returning.is_some(),
            )
        }
        Statement::Update(update) => (
            tables_of(std::slice::from_ref(&update.table))?,
            update.returning.is_some(),
        ),
        Statement::Delete(delete) => {
            let targets = if delete.tables.is_empty() {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &delete.from;
                tables_of(from)?
            } else {
                delete
                    .tables
                    .iter()
                    .map(TableRef::from_object_name)
                    .collect::<Result<_, _>>()?
            };
            (targets, delete.returning.is_some())
        }
        Statement::Merge(merge) => {
            let TableFactor::Table { name, .. } = &merge.table else {
                return Err("MERGE into something other than a table is not allowed".to_owned());
            };
            // MERGE reads the target to match rows: it is visited as a relation (a read) too.
            (vec![TableRef::from_object_name(name)?], false)
        }
        _ => return Ok(None),
    }))
}

/// The tables of a `FROM`-like list: each relation and its joins.
fn tables_of(list: &[TableWithJoins]) -> Result<Vec<TableRef>, String> {
    let mut found = Vec::new();
    let factors = list
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)));
    for factor in factors {
        if let TableFactor::Table { name, .. } = factor {
            found.push(TableRef::from_object_name(name)?);
        }
    }
    Ok(found)
}

/// Walks a statement: collects relations (skipping references to CTEs in scope), records the
/// targets of every data-changing statement at any depth and of `SELECT … INTO`, refuses
/// functions that are not on the allowed list and placeholders other than `?`.
#[derive(Default)]
struct Collector {
    cte_scopes: Vec<HashSet<String>>,
    relations: Vec<TableRef>,
    writes: Vec<TableRef>,
    select_into: Vec<TableRef>,
    /// Write targets whose own visit as a relation is still to come (not a read).
    pending_targets: Vec<TableRef>,
    placeholders: usize,
    /// The dialect: how names compare, and whether `$n` are the guard's own numbering of `?`
    /// (PostgreSQL; see `parse_one`).
    dialect: SqlDialect,
}

impl Collector {
    fn is_cte(&self, name: &ObjectName) -> bool {
        match name.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] => {
                let name = normalized(ident, self.dialect);
                self.cte_scopes.iter().any(|scope| scope.contains(&name))
            }
            _ => false,
        }
    }

    /// `TABLE name` query bodies are relations the generic visitor does not report.
    fn collect_table_bodies(&mut self, body: &SetExpr) -> Result<(), String> {
        match body {
            SetExpr::Table(table) => {
                let Some(name) = &table.table_name else {
                    return Err("`TABLE` without a name".to_owned());
                };
                let mut parts: Vec<String> = table
                    .schema_name
                    .iter()
                    .map(|s| s.value.to_lowercase())
                    .collect();
                parts.push(name.value.to_lowercase());
                let key = normalized(name, self.dialect);
                let is_cte =
                    table.schema_name.is_none() && self.cte_scopes.iter().any(|s| s.contains(&key));
                let reference = TableRef { parts };
                if !is_cte {
                    self.relations.push(reference);
                }
                Ok(())
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.collect_table_bodies(left)?;
                self.collect_table_bodies(right)
            }
            _ => Ok(()),
        }
    }
}

impl Visitor for Collector {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        match write_targets(statement) {
            Ok(Some((targets, returning))) => {
                if returning {
                    self.relations.extend(targets.iter().cloned());
                }
                if !matches!(statement, Statement::Merge(_)) {
                    self.pending_targets.extend(targets.iter().cloned());
                }
                self.writes.extend(targets);
                ControlFlow::Continue(())
            }
            Ok(None) => ControlFlow::Continue(()),
            Err(problem) => ControlFlow::Break(problem),
        }
    }

    /// Table functions (`FROM f(…)`, `LATERAL f(…)`, `JSON_TABLE`, `XMLTABLE`, …) run code
    /// the function allow-list would not see: only plain tables, subqueries, joins and `UNNEST`.
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { args: None, .. }
            | TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. } => ControlFlow::Continue(()),
            TableFactor::Table { name, .. } | TableFactor::Function { name, .. } => {
                ControlFlow::Break(format!(
                    "table function `{name}` is not allowed: select from tables"
                ))
            }
            _ => ControlFlow::Break(
                "this kind of table source (a table function, PIVOT, MATCH_RECOGNIZE, …) is not allowed"
                    .to_owned(),
            ),
        }
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<String> {
        if let Value::Placeholder(placeholder) = &value.value {
            let numbered = self.dialect == SqlDialect::Postgres
                && placeholder
                    .strip_prefix('$')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if placeholder != "?" && !numbered {
                return ControlFlow::Break(format!(
                    "placeholder `{placeholder}` is not supported: write `?` for each argument"
                ));
            }
            self.placeholders += 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        let mut scope = HashSet::new();
        if let Some(with) = &query.with {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|cte| normalized(&cte.alias.name, self.dialect))
                .collect();
            if !with.recursive {
                // A non-recursive CTE body cannot see itself or later CTEs: a same-named relation
                // in it is a real table, which this walker would mistake for the CTE. Refuse.
                for (index, cte) in with.cte_tables.iter().enumerate() {
                    let shadowed =
                        visit_relations(&cte.query, |relation| match relation.0.as_slice() {
                            [ObjectNamePart::Identifier(ident)]
                                if names[index..].contains(&normalized(ident, self.dialect)) =>
                            {
                                ControlFlow::Break(ident.value.clone())
                            }
                            _ => ControlFlow::Continue(()),
                        });
                    if let ControlFlow::Break(name) = shadowed {
                        return ControlFlow::Break(format!(
                            "the CTE `{}` reads a table named `{name}` that a CTE of the same query shadows: rename the CTE",
                            cte.alias.name.value
                        ));
                    }
                }
            }
            scope.extend(names);
        }
        self.cte_scopes.push(scope);
        if let Err(problem) = self.collect_table_bodies(&query.body) {
            return ControlFlow::Break(problem);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.cte_scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        for target in select.into.iter().flat_map(|into| &into.targets) {
            let parts = match target {
                Expr::Identifier(ident) => vec![ident.value.to_lowercase()],
                Expr::CompoundIdentifier(idents) => {
                    idents.iter().map(|i| i.value.to_lowercase()).collect()
                }
                other => {
                    return ControlFlow::Break(format!("SELECT … INTO {other} is not allowed"));
                }
            };
            if parts.iter().any(|p| p.is_empty() || p.contains('/')) {
                return ControlFlow::Break(format!("SELECT … INTO {target} is not allowed"));
            }
            self.select_into.push(TableRef { parts });
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        let table = match TableRef::from_object_name(relation) {
            Ok(table) => table,
            Err(problem) => return ControlFlow::Break(problem),
        };
        // A write target's own visit is not a read (it is recorded as a write).
        if let Some(index) = self.pending_targets.iter().position(|t| *t == table) {
            self.pending_targets.remove(index);
            return ControlFlow::Continue(());
        }
        if !self.is_cte(relation) {
            self.relations.push(table);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        if let Expr::Function(function) = expr {
            let name = function
                .name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase());
            match name {
                Some(name) if function.name.0.len() == 1 && is_allowed_function(&name) => {}
                _ => {
                    return ControlFlow::Break(format!(
                        "function `{}` is not on the sandbox's list of allowed SQL functions",
                        function.name
                    ));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;

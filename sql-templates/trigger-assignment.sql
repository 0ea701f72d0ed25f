  NEW.{{column}} := {{schema}}.pseudonym(NEW.{{column}});
